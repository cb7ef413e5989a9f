/** Order lists kept current by WatchOrders events. */
import type { Order } from "../gen/stockmesh/orders/v1/orders_pb";

const stamp = (o: Order) => (o.updatedAt ? Number(o.updatedAt.seconds) * 1000 + o.updatedAt.nanos / 1e6 : 0);

/**
 * Merges `incoming` into `list`: one entry per order id, the later `updated_at` wins (so a
 * list page read before an event never undoes it), newest order first (ids are UUIDv7).
 */
export function mergeOrders(list: Order[], incoming: Order[]): Order[] {
  const byId = new Map(list.map((o) => [o.id, o]));
  for (const o of incoming) {
    const cur = byId.get(o.id);
    if (!cur || stamp(o) >= stamp(cur)) byId.set(o.id, o);
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}
