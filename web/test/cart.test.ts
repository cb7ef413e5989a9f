import { describe, expect, it } from "vitest";
import { Cart } from "../src/state/cart";

class Mem {
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

const mug = { productId: "p1", name: "Mug", priceCents: 1250, currency: "USD" };
const tea = { productId: "p2", name: "Tea", priceCents: 400, currency: "USD" };

describe("Cart", () => {
  it("holds several lines and builds the CreateOrder request", () => {
    let n = 0;
    const c = new Cart(undefined, "k", () => `req-${++n}`);
    c.add(mug, 2);
    c.add(tea);
    c.add(mug);
    expect(c.count).toBe(4);
    expect(c.totals().get("USD")).toBe(3 * 1250 + 400);
    expect(c.toRequest()).toEqual({
      requestId: c.action.requestId,
      items: [
        { productId: "p1", quantity: 3n },
        { productId: "p2", quantity: 1n },
      ],
    });
    c.setDelivery({ latitude: 41.39, longitude: 2.17 });
    expect(c.toRequest()).toMatchObject({ latitude: 41.39, longitude: 2.17 });
  });

  it("refuses bad quantities and delivery points", () => {
    const c = new Cart();
    expect(() => c.add(mug, 0)).toThrow();
    expect(() => c.add(mug, 1.5)).toThrow();
    expect(() => c.setDelivery({ latitude: 91, longitude: 0 })).toThrow(/Latitude/);
    expect(() => c.setDelivery({ latitude: 0, longitude: -181 })).toThrow(/Longitude/);
  });

  it("removes a line at quantity 0", () => {
    const c = new Cart();
    c.add(mug);
    c.add(tea);
    c.setQuantity("p1", 0);
    expect(c.items.map((l) => l.productId)).toEqual(["p2"]);
  });

  it("keeps one request id per cart until the order is placed", async () => {
    let n = 0;
    const c = new Cart(undefined, "k", () => `req-${++n}`);
    c.add(mug);
    const id = c.action.requestId;
    c.add(tea); // editing before any submission keeps the id
    expect(c.action.requestId).toBe(id);
    await c.action.run(async () => "order");
    c.clear();
    expect(c.action.requestId).not.toBe(id);
    expect(c.items).toHaveLength(0);
  });

  it("survives a reload with its lines and request id", () => {
    const s = new Mem();
    const a = new Cart(s, "cart.u1");
    a.add(mug, 2);
    const b = new Cart(s, "cart.u1");
    expect(b.items).toEqual([{ ...mug, quantity: 2 }]);
    expect(b.action.requestId).toBe(a.action.requestId);
  });
});
