/**
 * What the user sees when a call fails: the API's own message (the gateway and the services
 * word them for people, naming the field or the product), prefixed by a short title for the
 * code. A failure to reach the server at all gets its own wording instead of "unknown".
 */
import { Code, ConnectError } from "@connectrpc/connect";

const TITLES: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "Invalid input",
  [Code.FailedPrecondition]: "Not possible now",
  [Code.NotFound]: "Not found",
  [Code.AlreadyExists]: "Already exists",
  [Code.PermissionDenied]: "Not allowed",
  [Code.Unauthenticated]: "Signed out",
  [Code.ResourceExhausted]: "Too many requests",
  [Code.Unavailable]: "Service unavailable",
  [Code.DeadlineExceeded]: "Timed out",
  [Code.Unimplemented]: "Not supported by this server",
  [Code.Internal]: "Server error",
};

export interface UiError {
  code: Code;
  title: string;
  message: string;
}

/** True when the failure says nothing about whether a write happened (retry with the same id). */
export function isAmbiguous(code: Code): boolean {
  return (
    code === Code.Unavailable ||
    code === Code.DeadlineExceeded ||
    code === Code.Unknown ||
    code === Code.Internal ||
    code === Code.Canceled ||
    code === Code.Aborted
  );
}

export function toUiError(e: unknown): UiError {
  const err = ConnectError.from(e);
  const network = err.cause instanceof TypeError || /failed to fetch|networkerror|load failed/i.test(err.rawMessage);
  if (network) {
    return { code: Code.Unavailable, title: "Cannot reach the server", message: "Check your connection and try again." };
  }
  const title = TITLES[err.code] ?? Code[err.code] ?? "Error";
  const message = err.rawMessage.trim() || title;
  return { code: err.code, title, message };
}

/** One line for a status region: "Not possible now: only 3 of “Mug” available". */
export function errorText(e: unknown): string {
  const u = toUiError(e);
  return u.message === u.title ? u.title : `${u.title}: ${u.message}`;
}
