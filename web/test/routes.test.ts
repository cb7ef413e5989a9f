import { describe, expect, it } from "vitest";
import { chooseTransport } from "../src/api/transport";
import { isConsolePath, parseRoute } from "../src/router";
import { mergeOrders } from "../src/state/orders";
import { parseCents } from "../src/format";
import type { Order } from "../src/gen/stockmesh/orders/v1/orders_pb";

describe("routes and settings", () => {
  it("parses the console's routes", () => {
    expect(parseRoute("/products/abc")).toEqual({ name: "product", id: "abc" });
    expect(parseRoute("/catalog", "?q=mug")).toEqual({ name: "catalog", query: "mug", page: "" });
    expect(parseRoute("/staff/products/p1/edit")).toEqual({ name: "staff-product-edit", id: "p1" });
    expect(parseRoute("/nope").name).toBe("not-found");
  });

  it("claims only its own paths (the gateway's fallback uses the same list)", () => {
    expect(isConsolePath("/")).toBe(true);
    expect(isConsolePath("/staff/orders")).toBe(true);
    expect(isConsolePath("/v1/products")).toBe(false);
    expect(isConsolePath("/openapi.json")).toBe(false);
    expect(isConsolePath("/catalogue")).toBe(false);
  });

  it("chooses gRPC-web unless told otherwise", () => {
    expect(chooseTransport("", null)).toBe("grpc-web");
    expect(chooseTransport("", "connect")).toBe("connect");
    expect(chooseTransport("?transport=grpc-web", "connect")).toBe("grpc-web");
    expect(chooseTransport("?transport=bogus", null)).toBe("grpc-web");
  });

  it("parses prices into cents", () => {
    expect(parseCents("12.5")).toBe(1250);
    expect(parseCents("3")).toBe(300);
    expect(parseCents("1.234")).toBeNull();
  });

  it("merges order events: newer wins, newest order first", () => {
    const o = (id: string, status: number, s: number) => ({ id, status, updatedAt: { seconds: BigInt(s), nanos: 0 } }) as unknown as Order;
    let l = mergeOrders([], [o("a", 1, 10), o("b", 1, 10)]);
    l = mergeOrders(l, [o("a", 2, 20)]);
    l = mergeOrders(l, [o("a", 1, 10)]); // a stale list page
    expect(l.map((x) => [x.id, x.status])).toEqual([
      ["b", 1],
      ["a", 2],
    ]);
  });
});
