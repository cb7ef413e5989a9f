/** Small accessible building blocks: labelled fields, status regions, buttons, paging. */
import type { ButtonHTMLAttributes, ComponentChildren, InputHTMLAttributes } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText } from "../api/errors";

let seq = 0;
export function useId(prefix: string): string {
  const r = useRef<string | undefined>(undefined);
  if (!r.current) r.current = `${prefix}-${++seq}`;
  return r.current;
}

interface InputProps {
  label: string;
  value: string;
  onInput: (v: string) => void;
  hint?: string;
  type?: string;
  name?: string;
  required?: boolean;
  autoComplete?: string;
  minLength?: number;
  maxLength?: number;
  min?: string;
  max?: string;
  step?: string;
  inputMode?: "decimal" | "numeric" | "text" | "email" | "tel";
}

export function Field({ label, value, onInput, hint, ...rest }: InputProps) {
  const id = useId("f");
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input
        id={id}
        value={value}
        onInput={(e) => onInput((e.currentTarget as HTMLInputElement).value)}
        aria-describedby={hint ? `${id}-hint` : undefined}
        {...(rest as InputHTMLAttributes<HTMLInputElement>)}
      />
      {hint && <small id={`${id}-hint`}>{hint}</small>}
    </div>
  );
}

export function Select({
  label,
  value,
  onChange,
  options,
  ...rest
}: {
  label: string;
  value: string;
  onChange: (v: string) => void;
  options: { value: string; label: string }[];
  required?: boolean;
  name?: string;
}) {
  const id = useId("s");
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => onChange((e.currentTarget as HTMLSelectElement).value)} {...rest}>
        {options.map((o) => (
          <option key={o.value} value={o.value}>
            {o.label}
          </option>
        ))}
      </select>
    </div>
  );
}

/** An error (role=alert) or a success note (role=status). */
export function Status({ error, ok }: { error?: unknown; ok?: string | null }) {
  if (error) {
    return (
      <p class="status error" role="alert" data-testid="error">
        {errorText(error)}
      </p>
    );
  }
  if (ok) {
    return (
      <p class="status ok" role="status">
        {ok}
      </p>
    );
  }
  return null;
}

export function Busy({ busy, children, ...rest }: ButtonHTMLAttributes<HTMLButtonElement> & { busy: boolean }) {
  return (
    <button {...rest} disabled={busy || (rest.disabled as boolean)} aria-busy={busy}>
      {children}
    </button>
  );
}

export function Page({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  const h = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · stockmesh`;
    h.current?.focus();
  }, [title]);
  return (
    <section aria-labelledby="page-title">
      <div class="page-head">
        <h1 id="page-title" tabIndex={-1} ref={h}>
          {title}
        </h1>
        {actions}
      </div>
      {children}
    </section>
  );
}

/** Loads `load()` when `deps` change; `reload()` loads again. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setLoading(true);
    load().then(
      (d) => {
        if (!live) return;
        setData(d);
        setError(null);
        setLoading(false);
      },
      (e) => {
        if (!live) return;
        setError(e);
        setLoading(false);
      },
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return { data, setData, error, loading, reload: () => setTick((t) => t + 1) };
}

/** Previous/next over page tokens (the API's paging is forward-only; we keep the trail). */
export function usePager() {
  const [trail, setTrail] = useState<string[]>([""]);
  const token = trail[trail.length - 1];
  return {
    token,
    page: trail.length,
    next: (t: string) => setTrail([...trail, t]),
    prev: () => setTrail(trail.length > 1 ? trail.slice(0, -1) : trail),
    reset: () => setTrail([""]),
  };
}

export function Pager({ page, hasNext, onPrev, onNext }: { page: number; hasNext: boolean; onPrev: () => void; onNext: () => void }) {
  return (
    <nav class="pager" aria-label="Pages">
      <button type="button" onClick={onPrev} disabled={page <= 1}>
        ← Previous
      </button>
      <span aria-live="polite">Page {page}</span>
      <button type="button" onClick={onNext} disabled={!hasNext}>
        Next →
      </button>
    </nav>
  );
}

export function LiveBadge({ state }: { state: string }) {
  const text = state === "live" ? "Live" : state === "stopped" ? "Not live" : "Reconnecting…";
  return (
    <span class={`badge live-${state}`} role="status" aria-live="polite" data-testid="live-state">
      {text}
    </span>
  );
}
