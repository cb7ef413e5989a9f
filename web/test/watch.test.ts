import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { startWatch, type WatchState } from "../src/api/watch";

interface Msg {
  eventId: string;
  v: number;
}

async function* stream(msgs: Msg[], end?: ConnectError) {
  for (const m of msgs) yield m;
  if (end) throw end;
}

const until = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  expect(cond()).toBe(true);
};

describe("startWatch", () => {
  it("reopens after UNAVAILABLE with the last event id", async () => {
    const opened: string[] = [];
    const got: number[] = [];
    const plan = [
      () => stream([{ eventId: "", v: 1 }, { eventId: "e1", v: 2 }], new ConnectError("draining", Code.Unavailable)),
      () => stream([{ eventId: "e2", v: 3 }], new ConnectError("lagged", Code.ResourceExhausted)),
      () => stream([{ eventId: "e3", v: 4 }]),
    ];
    const stop = startWatch<Msg>({
      open: (after) => {
        opened.push(after);
        return (plan.shift() ?? (() => stream([])))();
      },
      eventId: (m) => m.eventId,
      onMessage: (m) => got.push(m.v),
      sleep: () => new Promise((r) => setTimeout(r, 0)),
    });
    await until(() => got.length === 4);
    stop();
    expect(got).toEqual([1, 2, 3, 4]);
    expect(opened.slice(0, 3)).toEqual(["", "e1", "e2"]);
  });

  it("refreshes once on UNAUTHENTICATED, then stops on a second refusal", async () => {
    const states: WatchState[] = [];
    let refreshes = 0;
    let opens = 0;
    startWatch<Msg>({
      open: () => {
        opens++;
        return stream([], new ConnectError("token expired", Code.Unauthenticated));
      },
      eventId: (m) => m.eventId,
      onMessage: () => {},
      onUnauthenticated: async () => {
        refreshes++;
        return true;
      },
      onState: (s) => states.push(s),
      sleep: () => new Promise((r) => setTimeout(r, 0)),
    });
    await until(() => states.at(-1) === "stopped");
    expect(refreshes).toBe(1);
    expect(opens).toBe(2);
  });

  it("stops and reports a bad request", async () => {
    let err: ConnectError | undefined;
    startWatch<Msg>({
      open: () => stream([], new ConnectError("too many product ids", Code.InvalidArgument)),
      eventId: (m) => m.eventId,
      onMessage: () => {},
      onState: (s, e) => {
        if (s === "stopped") err = e;
      },
      sleep: () => new Promise((r) => setTimeout(r, 0)),
    });
    await until(() => !!err);
    expect(err?.code).toBe(Code.InvalidArgument);
  });
});
