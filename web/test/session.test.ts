import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it, vi } from "vitest";
import { Role } from "../src/gen/stockmesh/auth/v1/auth_pb";
import { refreshMargin, Session, STORAGE_KEY, type TokenReply } from "../src/api/session";

class MemStorage {
  m = new Map<string, string>();
  getItem(k: string) {
    return this.m.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.m.set(k, v);
  }
  removeItem(k: string) {
    this.m.delete(k);
  }
}

const user = { id: "u1", email: "a@b.c", displayName: "Ana", role: Role.CUSTOMER };
const reply = (n: number, ttl = 900): TokenReply => ({ accessToken: `a${n}`, refreshToken: `r${n}`, expiresIn: BigInt(ttl), user });

function make(refresh: (t: string) => Promise<TokenReply>, storage = new MemStorage()) {
  let now = 1_000_000;
  const timers: { fn: () => void; at: number }[] = [];
  const s = new Session({
    storage,
    refresh,
    now: () => now,
    setTimer: (fn, ms) => {
      const t = { fn, at: now + ms };
      timers.push(t);
      return t;
    },
    clearTimer: (t) => timers.splice(timers.indexOf(t as (typeof timers)[0]), 1),
  });
  return { s, storage, timers, advance: (ms: number) => (now += ms) };
}

describe("Session", () => {
  it("stores the pair at sign-in and hands out the access token", async () => {
    const { s, storage } = make(vi.fn());
    s.signedIn(reply(1));
    expect(await s.accessToken()).toBe("a1");
    expect(JSON.parse(storage.getItem(STORAGE_KEY)!).refreshToken).toBe("r1");
  });

  it("refreshes before expiry, rotating the refresh token", async () => {
    const refresh = vi.fn(async (t: string) => (t === "r1" ? reply(2) : Promise.reject(new Error("reused"))));
    const { s, advance, timers } = make(refresh);
    s.signedIn(reply(1));
    expect(timers.at(-1)!.at - 1_000_000).toBe(900_000 - refreshMargin(900_000));
    advance(900_000 - 30_000);
    expect(await s.accessToken()).toBe("a2");
    expect(refresh).toHaveBeenCalledOnce();
    expect(s.current?.refreshToken).toBe("r2");
  });

  it("rotates once for concurrent callers", async () => {
    let calls = 0;
    const { s } = make(async () => {
      calls++;
      await new Promise((r) => setTimeout(r, 5));
      return reply(2);
    });
    s.signedIn(reply(1));
    const r = await Promise.all([s.refresh("a1"), s.refresh("a1"), s.refresh("a1")]);
    expect(r).toEqual([true, true, true]);
    expect(calls).toBe(1);
    // A call refused with the old token after the rotation needs no new rotation.
    expect(await s.refresh("a1")).toBe(true);
    expect(calls).toBe(1);
  });

  it("adopts a pair another tab already rotated instead of reusing the spent token", async () => {
    const storage = new MemStorage();
    const refresh = vi.fn(async () => reply(9));
    const { s } = make(refresh, storage);
    s.signedIn(reply(1));
    // The other tab rotated r1 → r2 and stored it.
    storage.setItem(STORAGE_KEY, JSON.stringify({ ...JSON.parse(storage.getItem(STORAGE_KEY)!), accessToken: "a2", refreshToken: "r2" }));
    expect(await s.refresh("a1")).toBe(true);
    expect(refresh).not.toHaveBeenCalled();
    expect(await s.accessToken()).toBe("a2");
  });

  it("ends the session when the refresh is refused UNAUTHENTICATED", async () => {
    const { s, storage } = make(async () => {
      throw new ConnectError("refresh token reused", Code.Unauthenticated);
    });
    const events: string[] = [];
    s.subscribe((e) => events.push(e));
    s.signedIn(reply(1));
    expect(await s.refresh("a1")).toBe(false);
    expect(s.current).toBeNull();
    expect(storage.getItem(STORAGE_KEY)).toBeNull();
    expect(events).toEqual(["signed-in", "expired"]);
  });

  it("keeps the session when the server cannot be reached", async () => {
    const { s } = make(async () => {
      throw new ConnectError("down", Code.Unavailable);
    });
    s.signedIn(reply(1));
    expect(await s.refresh("a1")).toBe(false);
    expect(s.current?.refreshToken).toBe("r1");
  });

  it("a stream ended by an expired token reopens without a rotation when the session is already fresh", async () => {
    const refresh = vi.fn(async () => reply(2));
    const { s, advance } = make(refresh);
    s.signedIn(reply(1));
    expect(await s.ensureFresh()).toBe(true);
    expect(refresh).not.toHaveBeenCalled();
    advance(899_000);
    expect(await s.ensureFresh()).toBe(true);
    expect(refresh).toHaveBeenCalledOnce();
  });

  it("restores a stored session and signs out", () => {
    const storage = new MemStorage();
    make(vi.fn(), storage).s.signedIn(reply(1));
    const { s } = make(vi.fn(), storage);
    expect(s.user?.email).toBe("a@b.c");
    s.signOut();
    expect(s.user).toBeNull();
  });
});
