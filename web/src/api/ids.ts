/**
 * Request ids for idempotent writes (Restock, AdjustStock, CreateOrder): random UUIDv4 text
 * from `crypto.getRandomValues`, which (unlike `crypto.randomUUID`) also works when the
 * console is served over plain http on a LAN address (not a secure context).
 */
export function newRequestId(random: (b: Uint8Array) => Uint8Array = (b) => crypto.getRandomValues(b)): string {
  const b = random(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
