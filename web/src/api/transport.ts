/**
 * Which wire protocol the console speaks to the gateway: gRPC-web (binary protobuf) by
 * default, or the Connect protocol (JSON) — chosen on the sign-in screen and remembered, or
 * for one visit with `?transport=connect` / `?transport=grpc-web`.
 */
export type TransportKind = "grpc-web" | "connect";

export const TRANSPORT_KEY = "stockmesh.transport";

export function parseTransport(v: string | null | undefined): TransportKind | null {
  return v === "connect" || v === "grpc-web" ? v : null;
}

/** The query parameter wins over the stored setting, which wins over the default. */
export function chooseTransport(search: string, stored: string | null): TransportKind {
  return parseTransport(new URLSearchParams(search).get("transport")) ?? parseTransport(stored) ?? "grpc-web";
}
