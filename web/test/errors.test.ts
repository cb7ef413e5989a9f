import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { errorText, isAmbiguous, toUiError } from "../src/api/errors";

describe("error mapping", () => {
  it("shows the API's message under a title for its code", () => {
    const e = new ConnectError("only 1 of Mug available in any warehouse", Code.FailedPrecondition);
    expect(toUiError(e)).toEqual({ code: Code.FailedPrecondition, title: "Not possible now", message: "only 1 of Mug available in any warehouse" });
    expect(errorText(e)).toBe("Not possible now: only 1 of Mug available in any warehouse");
  });

  it("words a network failure for people", () => {
    const u = toUiError(new TypeError("Failed to fetch"));
    expect(u.title).toBe("Cannot reach the server");
    expect(u.code).toBe(Code.Unavailable);
  });

  it("falls back to the title when the message is empty, and maps plain errors", () => {
    expect(errorText(new ConnectError("", Code.PermissionDenied))).toBe("Not allowed");
    expect(errorText(new Error("Price must look like 12.34"))).toContain("Price must look like 12.34");
  });

  it("knows which failures may have written", () => {
    expect(isAmbiguous(Code.Unavailable)).toBe(true);
    expect(isAmbiguous(Code.DeadlineExceeded)).toBe(true);
    expect(isAmbiguous(Code.InvalidArgument)).toBe(false);
    expect(isAmbiguous(Code.FailedPrecondition)).toBe(false);
  });
});
