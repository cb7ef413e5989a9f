/** Display helpers: money from cents, int64 (bigint) to number, timestamps. */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";

export function money(cents: bigint | number, currency = "USD"): string {
  const n = Number(cents) / 100;
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "USD" }).format(n);
  } catch {
    return `${n.toFixed(2)} ${currency}`;
  }
}

export function num(v: bigint | number): number {
  return Number(v);
}

export function when(t: Timestamp | undefined): string {
  return t ? timestampDate(t).toLocaleString() : "";
}

/** Whole cents from a price typed as "12.34". */
export function parseCents(text: string): number | null {
  const m = /^\s*(\d+)(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] ?? "0").padEnd(2, "0"));
}
