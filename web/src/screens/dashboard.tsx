/**
 * Dashboard (OPERATOR+): sales per day and per product over a period, and the stock report,
 * each drawn as a chart with its table and a CSV download of the same report.
 */
import { useState } from "preact/hooks";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { csvRequest, downloadCsv, type CsvRequest } from "../api/csv";
import { useApp } from "../context";
import { money, num } from "../format";
import { SalesReportGrouping } from "../gen/stockmesh/orders/v1/orders_pb";
import { BarChart } from "../ui/chart";
import { Busy, Field, Page, Status, useLoad } from "../ui/kit";

const DAY = 86_400_000;

function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** The period the date inputs describe: [from 00:00 UTC, to + 1 day 00:00 UTC). */
export function period(from: string, to: string): { start: Date; end: Date } {
  const start = new Date(`${from}T00:00:00Z`);
  const end = new Date(new Date(`${to}T00:00:00Z`).getTime() + DAY);
  return { start, end };
}

function CsvButton({ make, label }: { make: () => Promise<CsvRequest>; label: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  return (
    <span class="csv">
      <Busy
        busy={busy}
        type="button"
        class="link"
        onClick={async () => {
          setBusy(true);
          setError(null);
          try {
            await downloadCsv(await make());
          } catch (e) {
            setError(e);
          } finally {
            setBusy(false);
          }
        }}
      >
        Download CSV<span class="sr-only"> of {label}</span>
      </Busy>
      <Status error={error} />
    </span>
  );
}

export function Dashboard() {
  const { api, base } = useApp();
  const today = new Date();
  const [from, setFrom] = useState(isoDay(new Date(today.getTime() - 29 * DAY)));
  const [to, setTo] = useState(isoDay(today));
  const [applied, setApplied] = useState({ from, to });
  const { start, end } = period(applied.from, applied.to);
  const range = { startTime: timestampFromDate(start), endTime: timestampFromDate(end) };

  const byDay = useLoad(() => api.orders.getSalesReport({ ...range, groupBy: SalesReportGrouping.DAY }), [applied.from, applied.to]);
  const byProduct = useLoad(
    () => api.orders.getSalesReport({ ...range, groupBy: SalesReportGrouping.PRODUCT }),
    [applied.from, applied.to],
  );
  const stock = useLoad(() => api.inventory.getStockReport({}), []);
  const token = () => api.session.accessToken();
  const cur = byDay.data?.currency || "USD";
  const fmt = (c: string) => (v: number) => money(v, c);

  const stockByProduct = new Map<string, { name: string; available: number; value: number; low: boolean }>();
  for (const r of stock.data?.rows ?? []) {
    const e = stockByProduct.get(r.productId) ?? { name: r.productName, available: 0, value: 0, low: r.belowThreshold };
    e.available += num(r.available);
    e.value += num(r.valueCents);
    stockByProduct.set(r.productId, e);
  }
  const stockEntries = [...stockByProduct.values()];

  return (
    <Page title="Dashboard">
      <form
        class="row card"
        aria-label="Period"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied({ from, to });
        }}
      >
        <Field label="From" type="date" name="from" required value={from} onInput={setFrom} />
        <Field label="To (inclusive)" type="date" name="to" required value={to} onInput={setTo} />
        <button type="submit">Show</button>
      </form>

      <section class="card" aria-labelledby="sales-day-h" data-testid="sales-by-day">
        <div class="section-head">
          <h2 id="sales-day-h">Sales per day (UTC)</h2>
          <CsvButton label="sales per day" make={async () => csvRequest(base, "sales", { start, end, groupBy: "day" }, await token())} />
        </div>
        <Status error={byDay.error} />
        {byDay.data && (
          <>
            <p class="totals" data-testid="sales-totals">
              <span data-testid="total-orders">{num(byDay.data.totalOrders)}</span> orders ·{" "}
              <span data-testid="total-units">{num(byDay.data.totalUnits)}</span> units ·{" "}
              <span data-testid="total-revenue">{money(byDay.data.totalRevenueCents, cur)}</span>
            </p>
            <BarChart
              title="Revenue per day"
              labels={byDay.data.rows.map((r) => r.day)}
              series={[
                { label: "Revenue", values: byDay.data.rows.map((r) => num(r.revenueCents)), color: "#2563eb", format: fmt(cur) },
                { label: "Units", values: byDay.data.rows.map((r) => num(r.units)), color: "#16a34a" },
              ]}
            />
            <table>
              <caption>Sales per day</caption>
              <thead>
                <tr>
                  <th scope="col">Day</th>
                  <th scope="col">Orders</th>
                  <th scope="col">Units</th>
                  <th scope="col">Revenue</th>
                </tr>
              </thead>
              <tbody>
                {byDay.data.rows.map((r) => (
                  <tr key={r.day}>
                    <th scope="row">{r.day}</th>
                    <td>{num(r.orders)}</td>
                    <td>{num(r.units)}</td>
                    <td>{money(r.revenueCents, cur)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </section>

      <section class="card" aria-labelledby="sales-product-h" data-testid="sales-by-product">
        <div class="section-head">
          <h2 id="sales-product-h">Sales per product</h2>
          <CsvButton
            label="sales per product"
            make={async () => csvRequest(base, "sales", { start, end, groupBy: "product" }, await token())}
          />
        </div>
        <Status error={byProduct.error} />
        {byProduct.data && (
          <>
            <BarChart
              title="Revenue per product"
              labels={byProduct.data.rows.map((r) => r.productName)}
              series={[
                { label: "Revenue", values: byProduct.data.rows.map((r) => num(r.revenueCents)), color: "#7c3aed", format: fmt(cur) },
              ]}
            />
            <table>
              <caption>Sales per product</caption>
              <thead>
                <tr>
                  <th scope="col">Product</th>
                  <th scope="col">Orders</th>
                  <th scope="col">Units</th>
                  <th scope="col">Revenue</th>
                </tr>
              </thead>
              <tbody>
                {byProduct.data.rows.map((r) => (
                  <tr key={r.productId} data-product-id={r.productId}>
                    <th scope="row">{r.productName}</th>
                    <td>{num(r.orders)}</td>
                    <td>{num(r.units)}</td>
                    <td>{money(r.revenueCents, cur)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </section>

      <section class="card" aria-labelledby="stock-h" data-testid="stock-report">
        <div class="section-head">
          <h2 id="stock-h">Stock</h2>
          <CsvButton label="the stock report" make={async () => csvRequest(base, "stock", {}, await token())} />
        </div>
        <Status error={stock.error} />
        {stock.data && (
          <>
            <p class="totals">
              Stock value <strong>{money(stock.data.totalValueCents, stock.data.currency || "USD")}</strong>
            </p>
            <BarChart
              title="Available units per product"
              labels={stockEntries.map((e) => e.name)}
              series={[{ label: "Available", values: stockEntries.map((e) => e.available), color: "#ea580c" }]}
            />
            <table>
              <caption>Stock per product and warehouse</caption>
              <thead>
                <tr>
                  <th scope="col">Product</th>
                  <th scope="col">Warehouse</th>
                  <th scope="col">On hand</th>
                  <th scope="col">Reserved</th>
                  <th scope="col">Available</th>
                  <th scope="col">Value</th>
                  <th scope="col">Low?</th>
                </tr>
              </thead>
              <tbody>
                {stock.data.rows.map((r) => (
                  <tr key={`${r.productId}/${r.warehouseId}`}>
                    <th scope="row">{r.productName}</th>
                    <td>{r.warehouseName}</td>
                    <td>{num(r.onHand)}</td>
                    <td>{num(r.reserved)}</td>
                    <td>{num(r.available)}</td>
                    <td>{money(r.valueCents, stock.data!.currency || "USD")}</td>
                    <td>{r.belowThreshold ? <span class="badge status-cancelled">below {num(r.lowStockThreshold)}</span> : "no"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </section>
    </Page>
  );
}
