/**
 * The customer's cart and orders, and the staff's order queue. Order lists are kept live by
 * WatchOrders: the list is read once, then every change the stream brings replaces the
 * order by id (the newer `updated_at` wins, so a late list page never undoes an event).
 */
import { useEffect, useState } from "preact/hooks";
import { errorText } from "../api/errors";
import { startWatch, type WatchState } from "../api/watch";
import { useApp, useCartVersion, useUser } from "../context";
import { money, num, when } from "../format";
import { type Order, OrderStatus } from "../gen/stockmesh/orders/v1/orders_pb";
import { navigate } from "../router";
import { validDelivery } from "../state/cart";
import { mergeOrders } from "../state/orders";
import { Busy, LiveBadge, Page, Select, Status } from "../ui/kit";

export function statusName(s: OrderStatus): string {
  return OrderStatus[s] ?? "UNSPECIFIED";
}

function useLiveOrders(status: OrderStatus) {
  const { api } = useApp();
  const user = useUser();
  const [orders, setOrders] = useState<Order[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [live, setLive] = useState<WatchState>("connecting");
  useEffect(() => {
    if (!user) return;
    setOrders([]);
    const stop = startWatch({
      open: (afterEventId, signal, onHeader) => api.orders.watchOrders({ afterEventId }, { signal, onHeader }),
      eventId: (m) => m.eventId,
      onMessage: (m) => m.order && setOrders((l) => mergeOrders(l, [m.order!])),
      onState: (s, err) => {
        setLive(s);
        if (s === "stopped" && err) setError(err);
      },
      onUnauthenticated: () => api.session.ensureFresh(),
    });
    api.orders
      .listOrders({ pageSize: 100, status })
      .then((r) => setOrders((l) => mergeOrders(l, r.orders)), setError);
    return stop;
  }, [api, user?.id, status]);
  const shown = status === OrderStatus.UNSPECIFIED ? orders : orders.filter((o) => o.status === status);
  return { orders: shown, setOrders, error, setError, live };
}

function OrderCard({ o, children }: { o: Order; children?: preact.ComponentChildren }) {
  return (
    <li class="card order" data-order-id={o.id}>
      <div class="order-head">
        <strong>Order {o.id.slice(-8)}</strong>
        <span class={`badge status-${statusName(o.status).toLowerCase()}`} data-testid="order-status">
          {statusName(o.status)}
        </span>
      </div>
      <ul class="lines">
        {o.items.map((i) => (
          <li key={i.productId}>
            {num(i.quantity)} × {i.productName} @ {money(i.unitPriceCents, o.currency)}
          </li>
        ))}
      </ul>
      <p>
        Total <strong>{money(o.totalCents, o.currency)}</strong> · {when(o.createdAt)}
        {o.cancelReason && <> · cancelled: {o.cancelReason}</>}
      </p>
      {children}
    </li>
  );
}

export function MyOrders() {
  const { api } = useApp();
  const { orders, setOrders, error, setError, live } = useLiveOrders(OrderStatus.UNSPECIFIED);
  const [busy, setBusy] = useState<string | null>(null);
  const placed = new URLSearchParams(location.search).get("placed");
  return (
    <Page title="My orders" actions={<LiveBadge state={live} />}>
      {placed && <Status ok={`Order ${placed.slice(-8)} placed.`} />}
      <Status error={error} />
      {orders.length === 0 ? (
        <p>No orders yet. <a href="/catalog">Browse the catalog</a>.</p>
      ) : (
        <ul class="orders" aria-label="Orders">
          {orders.map((o) => (
            <OrderCard key={o.id} o={o}>
              {o.status === OrderStatus.PENDING && (
                <Busy
                  busy={busy === o.id}
                  type="button"
                  onClick={async () => {
                    setBusy(o.id);
                    try {
                      const r = await api.orders.cancelOrder({ id: o.id, reason: "cancelled by the customer" });
                      if (r.order) setOrders((l) => mergeOrders(l, [r.order!]));
                    } catch (e) {
                      setError(e);
                    } finally {
                      setBusy(null);
                    }
                  }}
                >
                  Cancel order
                </Busy>
              )}
            </OrderCard>
          ))}
        </ul>
      )}
    </Page>
  );
}

export function StaffOrders() {
  const { api } = useApp();
  const [status, setStatus] = useState(OrderStatus.PENDING);
  const { orders, setOrders, error, setError, live } = useLiveOrders(status);
  const [busy, setBusy] = useState<string | null>(null);
  async function act(o: Order, what: "complete" | "cancel") {
    if (busy) return;
    setBusy(o.id);
    setError(null);
    try {
      const r =
        what === "complete"
          ? await api.orders.completeOrder({ id: o.id })
          : await api.orders.cancelOrder({ id: o.id, reason: "cancelled by staff" });
      if (r.order) setOrders((l) => mergeOrders(l, [r.order!]));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(null);
    }
  }
  return (
    <Page title="Orders queue" actions={<LiveBadge state={live} />}>
      <Select
        label="Show"
        value={String(status)}
        onChange={(v) => setStatus(Number(v) as OrderStatus)}
        options={[
          { value: String(OrderStatus.PENDING), label: "Pending" },
          { value: String(OrderStatus.COMPLETED), label: "Completed" },
          { value: String(OrderStatus.CANCELLED), label: "Cancelled" },
          { value: String(OrderStatus.UNSPECIFIED), label: "All" },
        ]}
      />
      <Status error={error} />
      {orders.length === 0 ? (
        <p>No orders.</p>
      ) : (
        <ul class="orders" aria-label="Orders">
          {orders.map((o) => (
            <OrderCard key={o.id} o={o}>
              <p class="muted">Customer {o.customerId}</p>
              {o.status === OrderStatus.PENDING && (
                <div class="actions">
                  <Busy busy={busy === o.id} type="button" class="primary" onClick={() => act(o, "complete")}>
                    Complete
                  </Busy>
                  <Busy busy={busy === o.id} type="button" onClick={() => act(o, "cancel")}>
                    Cancel
                  </Busy>
                </div>
              )}
            </OrderCard>
          ))}
        </ul>
      )}
    </Page>
  );
}

export function CartPage() {
  const { api, cart } = useApp();
  useCartVersion();
  const [deliver, setDeliver] = useState(!!cart.delivery);
  const [lat, setLat] = useState(cart.delivery ? String(cart.delivery.latitude) : "");
  const [lon, setLon] = useState(cart.delivery ? String(cart.delivery.longitude) : "");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function place(e: Event) {
    e.preventDefault();
    if (busy || cart.action.inFlight) return;
    setError(null);
    try {
      if (deliver) {
        const bad = validDelivery(Number(lat), Number(lon));
        if (bad) throw new Error(bad);
        if (!cart.delivery || cart.delivery.latitude !== Number(lat) || cart.delivery.longitude !== Number(lon)) {
          cart.setDelivery({ latitude: Number(lat), longitude: Number(lon) });
        }
      } else if (cart.delivery) cart.setDelivery(null);
    } catch (err) {
      setError(err);
      return;
    }
    setBusy(true);
    try {
      const r = await cart.action.run((requestId) => api.orders.createOrder({ ...cart.toRequest(), requestId }));
      if (r?.order) {
        cart.clear();
        navigate(`/orders?placed=${encodeURIComponent(r.order.id)}`);
        return;
      }
    } catch (err) {
      cart.persist();
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  const totals = [...cart.totals()];
  return (
    <Page title="Cart">
      {cart.items.length === 0 ? (
        <p>
          The cart is empty. <a href="/catalog">Browse the catalog</a>.
        </p>
      ) : (
        <form onSubmit={place} class="card">
          <table>
            <caption>Lines</caption>
            <thead>
              <tr>
                <th scope="col">Product</th>
                <th scope="col">Unit price</th>
                <th scope="col">Quantity</th>
                <th scope="col">
                  <span class="sr-only">Remove</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {cart.items.map((l) => (
                <tr key={l.productId}>
                  <th scope="row">{l.name}</th>
                  <td>{money(l.priceCents, l.currency)}</td>
                  <td>
                    <label class="sr-only" for={`q-${l.productId}`}>
                      Quantity of {l.name}
                    </label>
                    <input
                      id={`q-${l.productId}`}
                      type="number"
                      min="1"
                      step="1"
                      value={l.quantity}
                      onChange={(e) => {
                        const n = Number(e.currentTarget.value);
                        if (Number.isInteger(n) && n > 0) cart.setQuantity(l.productId, n);
                      }}
                    />
                  </td>
                  <td>
                    <button type="button" onClick={() => cart.remove(l.productId)} aria-label={`Remove ${l.name}`}>
                      Remove
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p>
            Total:{" "}
            {totals.map(([c, v]) => (
              <strong key={c}>{money(v, c)} </strong>
            ))}
          </p>
          <fieldset>
            <legend>Delivery</legend>
            <label>
              <input type="checkbox" checked={deliver} onChange={(e) => setDeliver(e.currentTarget.checked)} /> Deliver to a point
              (stock comes from the nearest warehouse able to serve it)
            </label>
            {deliver && (
              <div class="row">
                <div class="field">
                  <label for="lat">Latitude</label>
                  <input id="lat" type="number" step="any" min="-90" max="90" required value={lat} onInput={(e) => setLat(e.currentTarget.value)} />
                </div>
                <div class="field">
                  <label for="lon">Longitude</label>
                  <input id="lon" type="number" step="any" min="-180" max="180" required value={lon} onInput={(e) => setLon(e.currentTarget.value)} />
                </div>
              </div>
            )}
          </fieldset>
          {error ? (
            <p class="status error" role="alert" data-testid="error">
              {errorText(error)}
            </p>
          ) : null}
          <Busy busy={busy} type="submit" class="primary">
            Place order
          </Busy>
        </form>
      )}
    </Page>
  );
}
