/**
 * The signed-in session: an access token (short-lived JWT), the rotating refresh token and
 * the user, kept in `localStorage` so a reload stays signed in.
 *
 * Refresh tokens are single use: rotating one twice revokes its whole family. Two tabs
 * sharing one stored session must therefore never both rotate it, so every refresh runs
 * under a cross-tab lock (Web Locks where present) and first re-reads storage: when another
 * tab already rotated, this tab adopts the stored pair instead of rotating the spent token.
 *
 * The access token is refreshed shortly before it expires (a timer, and a check before each
 * call, since timers are throttled in background tabs); a call refused UNAUTHENTICATED is
 * refreshed once and retried (see `clients.ts`); a refresh refused UNAUTHENTICATED (expired,
 * revoked, reused) ends the session and the app goes back to sign-in.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { Role } from "../gen/stockmesh/auth/v1/auth_pb";

export interface SessionUser {
  id: string;
  email: string;
  displayName: string;
  role: Role;
}

export interface Tokens {
  accessToken: string;
  refreshToken: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  /** Lifetime the server gave, ms (refresh margin). */
  ttlMs: number;
  user: SessionUser;
}

/** What Login and Refresh answer (the fields the session keeps). */
export interface TokenReply {
  accessToken: string;
  refreshToken: string;
  expiresIn: bigint | number;
  user?: { id: string; email: string; displayName: string; role: Role };
}

export type SessionEvent = "signed-in" | "refreshed" | "signed-out" | "expired";

export interface SessionDeps {
  storage: Pick<Storage, "getItem" | "setItem" | "removeItem">;
  /** AuthService.Refresh, through a client without the auth interceptor. */
  refresh: (refreshToken: string) => Promise<TokenReply>;
  now?: () => number;
  /** Runs `fn` holding the cross-tab refresh lock. */
  lock?: <T>(fn: () => Promise<T>) => Promise<T>;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (t: unknown) => void;
}

export const STORAGE_KEY = "stockmesh.session";

/** Refresh this long before expiry: a fifth of the lifetime, at most a minute. */
export function refreshMargin(ttlMs: number): number {
  return Math.min(60_000, Math.floor(ttlMs / 5));
}

export function tokensFrom(reply: TokenReply, now: number, previous?: SessionUser): Tokens {
  const ttlMs = Number(reply.expiresIn) * 1000;
  const user = reply.user
    ? { id: reply.user.id, email: reply.user.email, displayName: reply.user.displayName, role: reply.user.role }
    : previous;
  if (!user) throw new Error("the token reply has no user");
  return { accessToken: reply.accessToken, refreshToken: reply.refreshToken, expiresAt: now + ttlMs, ttlMs, user };
}

export function webLock<T>(fn: () => Promise<T>): Promise<T> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  return locks ? (locks.request("stockmesh.refresh", fn) as Promise<T>) : fn();
}

export class Session {
  private tokens: Tokens | null;
  private inflight: Promise<boolean> | null = null;
  private timer: unknown = null;
  private listeners = new Set<(e: SessionEvent) => void>();
  private readonly now: () => number;
  private readonly lock: <T>(fn: () => Promise<T>) => Promise<T>;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (t: unknown) => void;

  constructor(private readonly deps: SessionDeps) {
    this.now = deps.now ?? Date.now;
    this.lock = deps.lock ?? ((fn) => fn());
    this.setTimer = deps.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = deps.clearTimer ?? ((t) => clearTimeout(t as ReturnType<typeof setTimeout>));
    this.tokens = this.load();
    this.schedule();
  }

  get current(): Tokens | null {
    return this.tokens;
  }

  get user(): SessionUser | null {
    return this.tokens?.user ?? null;
  }

  subscribe(fn: (e: SessionEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  signedIn(reply: TokenReply): void {
    this.store(tokensFrom(reply, this.now()));
    this.emit("signed-in");
  }

  /** Forgets the session locally (the caller revokes the refresh token with Logout). */
  signOut(event: "signed-out" | "expired" = "signed-out"): void {
    this.tokens = null;
    this.deps.storage.removeItem(STORAGE_KEY);
    this.schedule();
    this.emit(event);
  }

  /** Another tab changed the stored session (the `storage` event). */
  reload(): void {
    const before = this.tokens?.refreshToken;
    this.tokens = this.load();
    this.schedule();
    if (!this.tokens && before) this.emit("signed-out");
    else if (this.tokens && this.tokens.refreshToken !== before) this.emit(before ? "refreshed" : "signed-in");
  }

  /** The access token to send, refreshed first when it is about to expire; null when signed out. */
  async accessToken(): Promise<string | null> {
    const t = this.tokens;
    if (!t) return null;
    if (this.now() >= t.expiresAt - refreshMargin(t.ttlMs)) {
      await this.refresh(t.accessToken);
    }
    return this.tokens?.accessToken ?? null;
  }

  /**
   * For a stream the server ended UNAUTHENTICATED (its token expired): true at once when the
   * session already holds a token well before its expiry (refreshed since the stream
   * opened), else a refresh.
   */
  ensureFresh(): Promise<boolean> {
    const t = this.tokens;
    if (!t) return Promise.resolve(false);
    if (this.now() < t.expiresAt - refreshMargin(t.ttlMs)) return Promise.resolve(true);
    return this.refresh();
  }

  /**
   * Rotates the refresh token (once for concurrent callers). `failed` is the access token a
   * call was refused with: when the session already moved past it, nothing is rotated.
   * True when a fresh access token is available.
   */
  refresh(failed?: string): Promise<boolean> {
    if (this.inflight) return this.inflight;
    if (failed && this.tokens && this.tokens.accessToken !== failed) return Promise.resolve(true);
    this.inflight = this.lock(() => this.rotate()).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async rotate(): Promise<boolean> {
    const mine = this.tokens;
    const stored = this.load();
    if (!stored) {
      if (mine) this.signOut("expired");
      return false;
    }
    if (mine && stored.refreshToken !== mine.refreshToken && this.now() < stored.expiresAt) {
      // Another tab rotated while this one waited for the lock.
      this.tokens = stored;
      this.schedule();
      this.emit("refreshed");
      return true;
    }
    try {
      const reply = await this.deps.refresh(stored.refreshToken);
      this.store(tokensFrom(reply, this.now(), stored.user));
      this.emit("refreshed");
      return true;
    } catch (e) {
      const code = ConnectError.from(e).code;
      if (code === Code.Unauthenticated || code === Code.InvalidArgument || code === Code.NotFound) {
        this.signOut("expired");
      }
      return false;
    }
  }

  private store(t: Tokens): void {
    this.tokens = t;
    this.deps.storage.setItem(STORAGE_KEY, JSON.stringify(t));
    this.schedule();
  }

  private load(): Tokens | null {
    const raw = this.deps.storage.getItem(STORAGE_KEY);
    if (!raw) return null;
    try {
      const t = JSON.parse(raw) as Tokens;
      return typeof t.accessToken === "string" && typeof t.refreshToken === "string" && t.user ? t : null;
    } catch {
      return null;
    }
  }

  private schedule(): void {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    const t = this.tokens;
    if (!t) return;
    const wait = Math.max(0, t.expiresAt - refreshMargin(t.ttlMs) - this.now());
    this.timer = this.setTimer(() => {
      this.timer = null;
      void this.refresh();
    }, wait);
  }

  private emit(e: SessionEvent): void {
    for (const fn of this.listeners) fn(e);
  }
}
