/**
 * The customer's cart: several lines (one per product), an optional delivery point, and the
 * request id of the order it will become (see `IdempotentAction`), stored per user in
 * localStorage so a reload keeps it. Placing the order sends exactly what `toRequest` says.
 */
import { IdempotentAction } from "./action";

export interface CartLine {
  productId: string;
  name: string;
  priceCents: number;
  currency: string;
  quantity: number;
}

export interface DeliveryPoint {
  latitude: number;
  longitude: number;
}

export interface CartSnapshot {
  lines: CartLine[];
  delivery: DeliveryPoint | null;
  requestId: string;
}

export const MAX_LINES = 100;

export function validDelivery(lat: number, lon: number): string | null {
  if (!Number.isFinite(lat) || lat < -90 || lat > 90) return "Latitude must be a number from -90 to 90";
  if (!Number.isFinite(lon) || lon < -180 || lon > 180) return "Longitude must be a number from -180 to 180";
  return null;
}

export class Cart {
  private lines: CartLine[] = [];
  private deliveryPoint: DeliveryPoint | null = null;
  readonly action: IdempotentAction;
  private listeners = new Set<() => void>();

  constructor(
    private readonly storage?: Pick<Storage, "getItem" | "setItem" | "removeItem">,
    private readonly key = "stockmesh.cart",
    makeId?: () => string,
  ) {
    const raw = storage?.getItem(key);
    let restoredId: string | undefined;
    if (raw) {
      try {
        const s = JSON.parse(raw) as CartSnapshot;
        restoredId = typeof s.requestId === "string" ? s.requestId : undefined;
        this.lines = Array.isArray(s.lines) ? s.lines.filter((l) => l.quantity > 0) : [];
        this.deliveryPoint = s.delivery ?? null;
      } catch {
        this.lines = [];
      }
    }
    this.action = new IdempotentAction(makeId, restoredId);
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get items(): readonly CartLine[] {
    return this.lines;
  }

  get delivery(): DeliveryPoint | null {
    return this.deliveryPoint;
  }

  get count(): number {
    return this.lines.reduce((n, l) => n + l.quantity, 0);
  }

  /** Totals per currency (a cart may mix currencies; the server refuses that with a message). */
  totals(): Map<string, number> {
    const t = new Map<string, number>();
    for (const l of this.lines) t.set(l.currency, (t.get(l.currency) ?? 0) + l.quantity * l.priceCents);
    return t;
  }

  add(p: Omit<CartLine, "quantity">, quantity = 1): void {
    if (!Number.isInteger(quantity) || quantity <= 0) throw new Error("Quantity must be a whole number above 0");
    const line = this.lines.find((l) => l.productId === p.productId);
    if (line) line.quantity += quantity;
    else {
      if (this.lines.length >= MAX_LINES) throw new Error(`A cart holds at most ${MAX_LINES} lines`);
      this.lines.push({ ...p, quantity });
    }
    this.changed();
  }

  setQuantity(productId: string, quantity: number): void {
    if (!Number.isInteger(quantity) || quantity < 0) throw new Error("Quantity must be a whole number");
    this.lines = quantity === 0
      ? this.lines.filter((l) => l.productId !== productId)
      : this.lines.map((l) => (l.productId === productId ? { ...l, quantity } : l));
    this.changed();
  }

  remove(productId: string): void {
    this.setQuantity(productId, 0);
  }

  setDelivery(d: DeliveryPoint | null): void {
    if (d) {
      const bad = validDelivery(d.latitude, d.longitude);
      if (bad) throw new Error(bad);
    }
    this.deliveryPoint = d;
    this.changed();
  }

  /** The CreateOrder request for this cart. */
  toRequest(): {
    requestId: string;
    items: { productId: string; quantity: bigint }[];
    latitude?: number;
    longitude?: number;
  } {
    return {
      requestId: this.action.requestId,
      items: this.lines.map((l) => ({ productId: l.productId, quantity: BigInt(l.quantity) })),
      ...(this.deliveryPoint ? { latitude: this.deliveryPoint.latitude, longitude: this.deliveryPoint.longitude } : {}),
    };
  }

  /** After the order was placed: empty, and the next order gets a new id. */
  clear(): void {
    this.lines = [];
    this.deliveryPoint = null;
    this.action.edited();
    this.changed(false);
  }

  /** Saves the id too (call after a submission, whose outcome may have changed it). */
  persist(): void {
    this.changed(false);
  }

  private changed(edited = true): void {
    if (edited) this.action.edited();
    this.storage?.setItem(this.key, JSON.stringify({ lines: this.lines, delivery: this.deliveryPoint, requestId: this.action.requestId }));
    for (const fn of this.listeners) fn();
  }
}
