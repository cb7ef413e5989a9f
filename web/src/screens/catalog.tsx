/** Catalog: search by name, paging, and a product's page with its stock per warehouse, live. */
import { useEffect, useMemo, useState } from "preact/hooks";
import { errorText } from "../api/errors";
import { startWatch, type WatchState } from "../api/watch";
import { isStaff, useApp, useUser } from "../context";
import { money, num } from "../format";
import type { Stock, Warehouse } from "../gen/stockmesh/inventory/v1/inventory_pb";
import { navigate } from "../router";
import { LiveBadge, Page, Pager, Status, useLoad, usePager } from "../ui/kit";
import { StockForms } from "./stock";

const PAGE_SIZE = 20;

export function Catalog({ query }: { query: string }) {
  const { api } = useApp();
  const user = useUser();
  const [text, setText] = useState(query);
  const pager = usePager();
  useEffect(() => pager.reset(), [query]);
  const list = useLoad(
    () => api.products.listProducts({ pageSize: PAGE_SIZE, pageToken: pager.token, nameContains: query }),
    [query, pager.token],
  );

  return (
    <Page
      title="Catalog"
      actions={isStaff(user) && <a class="button" href="/staff/products/new">New product</a>}
    >
      <form
        role="search"
        class="search"
        onSubmit={(e) => {
          e.preventDefault();
          navigate(text ? `/catalog?q=${encodeURIComponent(text)}` : "/catalog");
        }}
      >
        <label for="catalog-q">Search products</label>
        <input id="catalog-q" type="search" name="q" value={text} onInput={(e) => setText(e.currentTarget.value)} />
        <button type="submit">Search</button>
      </form>
      <Status error={list.error} />
      {list.loading && !list.data && <p aria-busy="true">Loading…</p>}
      {list.data && (
        <>
          {list.data.products.length === 0 ? (
            <p>No products{query ? ` matching “${query}”` : ""}.</p>
          ) : (
            <ul class="products" aria-label="Products">
              {list.data.products.map((p) => (
                <li key={p.id} class="card">
                  <a href={`/products/${p.id}`} class="product-link">
                    <strong>{p.name}</strong>
                  </a>
                  <span class="muted">{p.sku}</span>
                  <span class="price">{money(p.priceCents, p.currency)}</span>
                </li>
              ))}
            </ul>
          )}
          <Pager
            page={pager.page}
            hasNext={!!list.data.nextPageToken}
            onPrev={pager.prev}
            onNext={() => list.data && pager.next(list.data.nextPageToken)}
          />
        </>
      )}
    </Page>
  );
}

/** Warehouse names by id (signed-in users only may list warehouses). */
export function useWarehouses(): Map<string, Warehouse> {
  const { api } = useApp();
  const user = useUser();
  const [map, setMap] = useState(new Map<string, Warehouse>());
  useEffect(() => {
    if (!user) return;
    let live = true;
    (async () => {
      const m = new Map<string, Warehouse>();
      let token = "";
      do {
        const r = await api.inventory.listWarehouses({ pageSize: 500, pageToken: token });
        r.warehouses.forEach((w) => m.set(w.id, w));
        token = r.nextPageToken;
      } while (token && live);
      if (live) setMap(m);
    })().catch(() => undefined);
    return () => {
      live = false;
    };
  }, [api, user?.id]);
  return map;
}

export function ProductPage({ id }: { id: string }) {
  const { api, cart } = useApp();
  const user = useUser();
  const product = useLoad(() => api.products.getProduct({ id }), [id]);
  const warehouses = useWarehouses();
  const [stock, setStock] = useState<Stock | null>(null);
  const [live, setLive] = useState<WatchState>("connecting");
  const [watchError, setWatchError] = useState<unknown>(null);
  const [qty, setQty] = useState("1");
  const [added, setAdded] = useState<string | null>(null);
  const [addError, setAddError] = useState<unknown>(null);

  useEffect(() => {
    setStock(null);
    return startWatch({
      open: (afterEventId, signal, onHeader) =>
        api.inventory.watchStock({ productIds: [id], afterEventId }, { signal, onHeader }),
      eventId: (m) => m.eventId,
      onMessage: (m) => m.stock && m.stock.productId === id && setStock(m.stock),
      onState: (s, err) => {
        setLive(s);
        setWatchError(s === "stopped" ? err ?? null : null);
      },
      onUnauthenticated: () => api.session.ensureFresh(),
    });
  }, [api, id]);

  const p = product.data?.product;
  const rows = useMemo(() => stock?.warehouses ?? [], [stock]);
  return (
    <Page title={p ? p.name : "Product"} actions={<LiveBadge state={live} />}>
      <Status error={product.error} />
      {p && (
        <div class="grid2">
          <div class="card">
            <dl class="facts">
              <dt>SKU</dt>
              <dd>{p.sku}</dd>
              <dt>Price</dt>
              <dd>{money(p.priceCents, p.currency)}</dd>
              {p.description && (
                <>
                  <dt>Description</dt>
                  <dd>{p.description}</dd>
                </>
              )}
            </dl>
            {isStaff(user) && (
              <a class="button" href={`/staff/products/${p.id}/edit`}>
                Edit product
              </a>
            )}
            {user && (
              <form
                class="inline"
                onSubmit={(e) => {
                  e.preventDefault();
                  try {
                    cart.add({ productId: p.id, name: p.name, priceCents: num(p.priceCents), currency: p.currency }, Number(qty));
                    setAdded(`Added ${qty} × ${p.name} to the cart.`);
                    setAddError(null);
                  } catch (err) {
                    setAddError(err);
                  }
                }}
              >
                <label for="add-qty">Quantity</label>
                <input id="add-qty" type="number" min="1" step="1" required value={qty} onInput={(e) => setQty(e.currentTarget.value)} />
                <button type="submit" class="primary">
                  Add to cart
                </button>
              </form>
            )}
            {addError ? <p role="alert" class="status error">{errorText(addError)}</p> : <Status ok={added} />}
          </div>
          <div class="card">
            <h2>Stock</h2>
            <Status error={watchError} />
            {stock ? (
              <>
                <p class="stock-total" data-testid="stock-total">
                  <strong data-testid="available">{num(stock.totalAvailable)}</strong> available ·{" "}
                  <span data-testid="on-hand">{num(stock.totalOnHand)}</span> on hand ·{" "}
                  <span data-testid="reserved">{num(stock.totalReserved)}</span> reserved
                </p>
                {rows.length > 0 && (
                  <table>
                    <caption>Per warehouse</caption>
                    <thead>
                      <tr>
                        <th scope="col">Warehouse</th>
                        <th scope="col">On hand</th>
                        <th scope="col">Reserved</th>
                        <th scope="col">Available</th>
                      </tr>
                    </thead>
                    <tbody>
                      {rows.map((w) => (
                        <tr key={w.warehouseId}>
                          <th scope="row">{warehouses.get(w.warehouseId)?.name ?? w.warehouseId}</th>
                          <td>{num(w.onHand)}</td>
                          <td>{num(w.reserved)}</td>
                          <td>{num(w.available)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                )}
              </>
            ) : (
              <p aria-busy="true">Loading stock…</p>
            )}
          </div>
          {isStaff(user) && <StockForms productId={p.id} warehouses={[...warehouses.values()]} />}
        </div>
      )}
    </Page>
  );
}
