import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { newRequestId } from "../src/api/ids";
import { IdempotentAction } from "../src/state/action";

function ids() {
  let n = 0;
  return () => `id-${++n}`;
}

describe("IdempotentAction", () => {
  it("sends one write for a double submit, with the form's id", async () => {
    const a = new IdempotentAction(ids());
    const sent: string[] = [];
    let release!: () => void;
    const write = (id: string) => {
      sent.push(id);
      return new Promise<string>((r) => (release = () => r("ok")));
    };
    const first = a.run(write);
    const second = a.run(write);
    expect(a.inFlight).toBe(true);
    expect(await second).toBeUndefined();
    release();
    expect(await first).toBe("ok");
    expect(sent).toEqual(["id-1"]);
  });

  it("reuses the id after an ambiguous failure even when the form is edited", async () => {
    const a = new IdempotentAction(ids());
    await expect(a.run(() => Promise.reject(new ConnectError("timeout", Code.DeadlineExceeded)))).rejects.toThrow();
    a.edited();
    expect(a.requestId).toBe("id-1");
    expect(a.lastOutcome).toBe("ambiguous");
  });

  it("takes a new id for an edited form after a definite failure or a success", async () => {
    const a = new IdempotentAction(ids());
    await expect(a.run(() => Promise.reject(new ConnectError("short", Code.FailedPrecondition)))).rejects.toThrow();
    expect(a.requestId).toBe("id-1");
    a.edited();
    expect(a.requestId).toBe("id-2");
    await a.run(async () => 1);
    expect(a.requestId).toBe("id-2");
    a.edited();
    expect(a.requestId).toBe("id-3");
  });

  it("request ids are UUIDv4 text", () => {
    const id = newRequestId();
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(newRequestId()).not.toBe(id);
  });
});
