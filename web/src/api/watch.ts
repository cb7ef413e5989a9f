/**
 * Keeps a server stream (WatchStock, WatchOrders) open for as long as a screen shows it.
 *
 * The stream is reopened with `after_event_id` = the last event seen, so the server sends
 * what was missed first: after UNAVAILABLE (a draining gateway or service), a dropped
 * connection, a clean end, or RESOURCE_EXHAUSTED (this watcher lagged and was detached).
 * UNAUTHENTICATED (the token expired mid-stream) refreshes the session once and reopens.
 * Anything else (a bad request, no permission) stops the watch and is reported. Reconnects
 * back off 250 ms → 5 s; a message received resets the backoff.
 */
import { Code, ConnectError } from "@connectrpc/connect";

export type WatchState = "connecting" | "live" | "reconnecting" | "stopped";

export interface WatchOptions<T> {
  open: (afterEventId: string, signal: AbortSignal, onHeader: () => void) => AsyncIterable<T>;
  eventId: (m: T) => string;
  onMessage: (m: T) => void;
  onState?: (s: WatchState, err?: ConnectError) => void;
  /** Refreshes the session; true when the stream may be reopened. */
  onUnauthenticated?: () => Promise<boolean>;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  delays?: number[];
}

const DELAYS = [250, 500, 1000, 2000, 5000];

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

export function retryable(code: Code): boolean {
  return (
    code === Code.Unavailable ||
    code === Code.ResourceExhausted ||
    code === Code.DeadlineExceeded ||
    code === Code.Unknown ||
    code === Code.Internal ||
    code === Code.Aborted ||
    code === Code.Canceled
  );
}

/** Starts watching; the returned function stops it. */
export function startWatch<T>(o: WatchOptions<T>): () => void {
  const ctl = new AbortController();
  const sleep = o.sleep ?? abortableSleep;
  const delays = o.delays ?? DELAYS;
  void (async () => {
    let last = "";
    let attempt = 0;
    let refreshed = false;
    while (!ctl.signal.aborted) {
      o.onState?.(attempt === 0 ? "connecting" : "reconnecting");
      try {
        for await (const m of o.open(last, ctl.signal, () => o.onState?.("live"))) {
          o.onState?.("live");
          const id = o.eventId(m);
          if (id) last = id;
          attempt = 0;
          refreshed = false;
          o.onMessage(m);
        }
        if (ctl.signal.aborted) break;
      } catch (e) {
        if (ctl.signal.aborted) break;
        const err = ConnectError.from(e);
        if (err.code === Code.Unauthenticated && o.onUnauthenticated && !refreshed) {
          refreshed = true;
          if (await o.onUnauthenticated()) continue;
        }
        if (!retryable(err.code)) {
          o.onState?.("stopped", err);
          return;
        }
        o.onState?.("reconnecting", err);
      }
      await sleep(delays[Math.min(attempt, delays.length - 1)], ctl.signal);
      attempt += 1;
    }
    o.onState?.("stopped");
  })();
  return () => ctl.abort();
}
