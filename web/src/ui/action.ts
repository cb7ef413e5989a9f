/** A form's idempotent write as a hook: one request id per action, busy while in flight. */
import { useRef, useState } from "preact/hooks";
import { IdempotentAction } from "../state/action";

export function useAction() {
  const action = useRef<IdempotentAction | undefined>(undefined);
  if (!action.current) action.current = new IdempotentAction();
  const a = action.current;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [ok, setOk] = useState<string | null>(null);
  return {
    busy,
    error,
    ok,
    requestId: () => a.requestId,
    /** Call from every input handler of the form. */
    edited: () => a.edited(),
    async submit<T>(write: (requestId: string) => Promise<T>, success: (r: T) => string | null): Promise<T | undefined> {
      if (a.inFlight) return undefined;
      setBusy(true);
      setError(null);
      setOk(null);
      try {
        const r = await a.run(write);
        if (r !== undefined) setOk(success(r));
        return r;
      } catch (e) {
        setError(e);
        return undefined;
      } finally {
        setBusy(false);
      }
    },
  };
}
