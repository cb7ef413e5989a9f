/** Staff stock forms on a product's page: restock, adjust, low-stock threshold. */
import { useState } from "preact/hooks";
import { useApp } from "../context";
import { num } from "../format";
import type { Warehouse } from "../gen/stockmesh/inventory/v1/inventory_pb";
import { useAction } from "../ui/action";
import { Busy, Field, Select, Status } from "../ui/kit";

function whOptions(ws: Warehouse[]) {
  return [{ value: "", label: ws.length ? "Choose a warehouse" : "No warehouses yet" }, ...ws.map((w) => ({ value: w.id, label: w.name }))];
}

export function StockForms({ productId, warehouses }: { productId: string; warehouses: Warehouse[] }) {
  const { api } = useApp();
  const restock = useAction();
  const adjust = useAction();
  const threshold = useAction();
  const [rw, setRw] = useState("");
  const [rq, setRq] = useState("");
  const [aw, setAw] = useState("");
  const [ad, setAd] = useState("");
  const [ar, setAr] = useState("");
  const [th, setTh] = useState("");
  const ch = (a: { edited: () => void }, set: (v: string) => void) => (v: string) => {
    a.edited();
    set(v);
  };

  return (
    <div class="card">
      <h2>Stock changes</h2>
      <form
        aria-labelledby="restock-h"
        onSubmit={(e) => {
          e.preventDefault();
          void restock.submit(
            (requestId) => api.inventory.restock({ productId, warehouseId: rw, quantity: BigInt(Number(rq) || 0), requestId }),
            (r) => `Restocked: ${num(r.stock?.totalAvailable ?? 0n)} available now.`,
          );
        }}
      >
        <h3 id="restock-h">Restock</h3>
        <Select label="Warehouse" name="restock-warehouse" required value={rw} onChange={ch(restock, setRw)} options={whOptions(warehouses)} />
        <Field label="Units to add" name="restock-quantity" type="number" min="1" step="1" required value={rq} onInput={ch(restock, setRq)} />
        <Status error={restock.error} ok={restock.ok} />
        <Busy busy={restock.busy} type="submit" class="primary">
          Restock
        </Busy>
      </form>
      <form
        aria-labelledby="adjust-h"
        onSubmit={(e) => {
          e.preventDefault();
          void adjust.submit(
            (requestId) =>
              api.inventory.adjustStock({ productId, warehouseId: aw, delta: BigInt(Number(ad) || 0), reason: ar, requestId }),
            (r) => `Adjusted: ${num(r.stock?.totalOnHand ?? 0n)} on hand now.`,
          );
        }}
      >
        <h3 id="adjust-h">Adjust</h3>
        <Select label="Warehouse" name="adjust-warehouse" required value={aw} onChange={ch(adjust, setAw)} options={whOptions(warehouses)} />
        <Field label="Change (+/−)" name="adjust-delta" type="number" step="1" required value={ad} onInput={ch(adjust, setAd)} />
        <Field label="Reason" name="adjust-reason" required value={ar} onInput={ch(adjust, setAr)} />
        <Status error={adjust.error} ok={adjust.ok} />
        <Busy busy={adjust.busy} type="submit">
          Adjust
        </Busy>
      </form>
      <form
        aria-labelledby="threshold-h"
        onSubmit={(e) => {
          e.preventDefault();
          void threshold.submit(
            () => api.inventory.setLowStockThreshold({ productId, threshold: BigInt(Number(th) || 0) }),
            (r) => `Low-stock threshold: ${num(r.stock?.lowStockThreshold ?? 0n)}.`,
          );
        }}
      >
        <h3 id="threshold-h">Low-stock threshold</h3>
        <Field label="Threshold (0 = never low)" name="threshold" type="number" min="0" step="1" required value={th} onInput={setTh} />
        <Status error={threshold.error} ok={threshold.ok} />
        <Busy busy={threshold.busy} type="submit">
          Set threshold
        </Busy>
      </form>
    </div>
  );
}
