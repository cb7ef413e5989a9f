/** Staff catalog and warehouse management: products, suppliers, variables, warehouses. */
import { useEffect, useState } from "preact/hooks";
import { useApp } from "../context";
import { parseCents, when } from "../format";
import type { Supplier, Variable } from "../gen/stockmesh/products/v1/products_pb";
import type { Warehouse } from "../gen/stockmesh/inventory/v1/inventory_pb";
import { navigate } from "../router";
import { useAction } from "../ui/action";
import { Busy, Field, Page, Pager, Select, Status, useLoad, usePager } from "../ui/kit";

async function allSuppliers(list: (req: { pageSize: number; pageToken: string }) => Promise<{ suppliers: Supplier[]; nextPageToken: string }>) {
  const out: Supplier[] = [];
  let token = "";
  do {
    const r = await list({ pageSize: 500, pageToken: token });
    out.push(...r.suppliers);
    token = r.nextPageToken;
  } while (token);
  return out;
}

export function ProductForm({ id }: { id?: string }) {
  const { api } = useApp();
  const [sku, setSku] = useState("");
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [price, setPrice] = useState("");
  const [currency, setCurrency] = useState("USD");
  const [supplierId, setSupplierId] = useState("");
  const [loaded, setLoaded] = useState<Record<string, string> | null>(null);
  const suppliers = useLoad(() => allSuppliers((r) => api.products.listSuppliers(r)), []);
  const existing = useLoad(async () => (id ? (await api.products.getProduct({ id })).product ?? null : null), [id]);
  const save = useAction();

  useEffect(() => {
    const p = existing.data;
    if (!p) return;
    const v = {
      sku: p.sku,
      name: p.name,
      description: p.description,
      price: (Number(p.priceCents) / 100).toFixed(2),
      currency: p.currency,
      supplierId: p.supplierId,
    };
    setSku(v.sku);
    setName(v.name);
    setDescription(v.description);
    setPrice(v.price);
    setCurrency(v.currency);
    setSupplierId(v.supplierId);
    setLoaded(v);
  }, [existing.data]);

  async function submit(e: Event) {
    e.preventDefault();
    const cents = parseCents(price);
    if (cents === null) {
      void save.submit(() => Promise.reject(new Error("Price must look like 12.34")), () => null);
      return;
    }
    const r = await save.submit(
      async () => {
        if (!id) {
          const c = await api.products.createProduct({
            sku,
            name,
            description,
            priceCents: BigInt(cents),
            currency,
            ...(supplierId ? { supplierId } : {}),
          });
          return c.product;
        }
        const now: Record<string, string> = { sku, name, description, price, currency, supplierId };
        const fields: Record<string, string> = {
          sku: "sku",
          name: "name",
          description: "description",
          price: "price_cents",
          currency: "currency",
          supplierId: "supplier_id",
        };
        const paths = Object.keys(fields).filter((k) => !loaded || loaded[k] !== now[k]).map((k) => fields[k]);
        const u = await api.products.updateProduct({
          product: { id, sku, name, description, priceCents: BigInt(cents), currency, supplierId },
          updateMask: { paths },
        });
        return u.product;
      },
      () => (id ? "Saved." : null),
    );
    if (r && !id) navigate(`/products/${r.id}`);
  }

  return (
    <Page title={id ? "Edit product" : "New product"}>
      <Status error={existing.error || suppliers.error} />
      <form class="card narrow" onSubmit={submit}>
        <Field label="SKU" name="sku" required value={sku} onInput={setSku} />
        <Field label="Name" name="name" required value={name} onInput={setName} />
        <Field label="Description" name="description" value={description} onInput={setDescription} />
        <Field label="Price" name="price" inputMode="decimal" required hint="e.g. 12.50" value={price} onInput={setPrice} />
        <Field label="Currency" name="currency" required maxLength={3} value={currency} onInput={(v) => setCurrency(v.toUpperCase())} />
        <Select
          label="Supplier"
          name="supplier"
          value={supplierId}
          onChange={setSupplierId}
          options={[{ value: "", label: "None" }, ...(suppliers.data ?? []).map((s) => ({ value: s.id, label: s.name }))]}
        />
        <Status error={save.error} ok={save.ok} />
        <Busy busy={save.busy} type="submit" class="primary">
          {id ? "Save" : "Create product"}
        </Busy>
      </form>
    </Page>
  );
}

export function Suppliers() {
  const { api } = useApp();
  const pager = usePager();
  const list = useLoad(() => api.products.listSuppliers({ pageSize: 50, pageToken: pager.token }), [pager.token]);
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [phone, setPhone] = useState("");
  const [editing, setEditing] = useState<Supplier | null>(null);
  const save = useAction();
  const del = useAction();

  async function submit(e: Event) {
    e.preventDefault();
    const r = await save.submit<unknown>(
      () =>
        editing
          ? api.products.updateSupplier({
              supplier: { id: editing.id, name, contactEmail: email, phone },
              updateMask: { paths: ["name", "contact_email", "phone"] },
            })
          : api.products.createSupplier({ name, contactEmail: email, phone }),
      () => (editing ? "Supplier saved." : "Supplier created."),
    );
    if (r) {
      setEditing(null);
      setName("");
      setEmail("");
      setPhone("");
      list.reload();
    }
  }

  return (
    <Page title="Suppliers">
      <form class="card narrow" onSubmit={submit} aria-label={editing ? "Edit supplier" : "New supplier"}>
        <h2>{editing ? `Edit ${editing.name}` : "New supplier"}</h2>
        <Field label="Name" name="supplier-name" required value={name} onInput={setName} />
        <Field label="Contact email" name="supplier-email" type="email" value={email} onInput={setEmail} />
        <Field label="Phone" name="supplier-phone" type="tel" value={phone} onInput={setPhone} />
        <Status error={save.error} ok={save.ok} />
        <Busy busy={save.busy} type="submit" class="primary">
          {editing ? "Save supplier" : "Create supplier"}
        </Busy>
        {editing && (
          <button type="button" onClick={() => setEditing(null)}>
            Stop editing
          </button>
        )}
      </form>
      <Status error={list.error || del.error} />
      <table>
        <caption>Suppliers</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Email</th>
            <th scope="col">Phone</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {(list.data?.suppliers ?? []).map((s) => (
            <tr key={s.id}>
              <th scope="row">{s.name}</th>
              <td>{s.contactEmail}</td>
              <td>{s.phone}</td>
              <td class="actions">
                <button
                  type="button"
                  onClick={() => {
                    setEditing(s);
                    setName(s.name);
                    setEmail(s.contactEmail);
                    setPhone(s.phone);
                  }}
                >
                  Edit<span class="sr-only"> {s.name}</span>
                </button>
                <Busy
                  busy={del.busy}
                  type="button"
                  onClick={async () => {
                    if (!confirm(`Delete supplier ${s.name}?`)) return;
                    if (await del.submit(() => api.products.deleteSupplier({ id: s.id }), () => "Deleted.")) list.reload();
                  }}
                >
                  Delete<span class="sr-only"> {s.name}</span>
                </Busy>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && <Pager page={pager.page} hasNext={!!list.data.nextPageToken} onPrev={pager.prev} onNext={() => pager.next(list.data!.nextPageToken)} />}
    </Page>
  );
}

export function Variables() {
  const { api } = useApp();
  const pager = usePager();
  const list = useLoad(() => api.products.listVariables({ pageSize: 50, pageToken: pager.token }), [pager.token]);
  const [name, setName] = useState("");
  const [unit, setUnit] = useState("");
  const save = useAction();
  return (
    <Page title="Variables">
      <form
        class="card narrow"
        aria-label="New variable"
        onSubmit={async (e) => {
          e.preventDefault();
          if (await save.submit(() => api.products.createVariable({ name, unit }), (r) => `Created ${r.variable?.name}.`)) {
            setName("");
            setUnit("");
            list.reload();
          }
        }}
      >
        <Field label="Name" name="variable-name" required hint="e.g. temperature" value={name} onInput={setName} />
        <Field label="Unit" name="variable-unit" hint="e.g. °C" value={unit} onInput={setUnit} />
        <Status error={save.error} ok={save.ok} />
        <Busy busy={save.busy} type="submit" class="primary">
          Create variable
        </Busy>
      </form>
      <Status error={list.error} />
      <table>
        <caption>Variables</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Unit</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {(list.data?.variables ?? []).map((v: Variable) => (
            <tr key={v.id}>
              <th scope="row">{v.name}</th>
              <td>{v.unit}</td>
              <td>{when(v.createdAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && <Pager page={pager.page} hasNext={!!list.data.nextPageToken} onPrev={pager.prev} onNext={() => pager.next(list.data!.nextPageToken)} />}
    </Page>
  );
}

export function Warehouses() {
  const { api } = useApp();
  const pager = usePager();
  const list = useLoad(() => api.inventory.listWarehouses({ pageSize: 50, pageToken: pager.token }), [pager.token]);
  const [editing, setEditing] = useState<Warehouse | null>(null);
  const [name, setName] = useState("");
  const [address, setAddress] = useState("");
  const [lat, setLat] = useState("");
  const [lon, setLon] = useState("");
  const [capacity, setCapacity] = useState("0");
  const save = useAction();

  function edit(w: Warehouse | null) {
    setEditing(w);
    setName(w?.name ?? "");
    setAddress(w?.address ?? "");
    setLat(w ? String(w.latitude) : "");
    setLon(w ? String(w.longitude) : "");
    setCapacity(w ? String(w.capacity) : "0");
  }

  async function submit(e: Event) {
    e.preventDefault();
    const fields = { name, address, latitude: Number(lat), longitude: Number(lon), capacity: BigInt(Number(capacity) || 0) };
    const r = await save.submit<{ warehouse?: Warehouse }>(
      () =>
        editing
          ? api.inventory.updateWarehouse({
              warehouse: { id: editing.id, ...fields },
              updateMask: { paths: ["name", "address", "latitude", "longitude", "capacity"] },
            })
          : api.inventory.createWarehouse(fields),
      (r) => `${editing ? "Saved" : "Created"} ${r.warehouse?.name}.`,
    );
    if (r) {
      edit(null);
      list.reload();
    }
  }

  return (
    <Page title="Warehouses">
      <form class="card narrow" onSubmit={submit} aria-label={editing ? "Edit warehouse" : "New warehouse"}>
        <h2>{editing ? `Edit ${editing.name}` : "New warehouse"}</h2>
        <Field label="Name" name="warehouse-name" required value={name} onInput={setName} />
        <Field label="Address" name="warehouse-address" value={address} onInput={setAddress} />
        <div class="row">
          <Field label="Latitude" name="warehouse-latitude" type="number" step="any" min="-90" max="90" required value={lat} onInput={setLat} />
          <Field label="Longitude" name="warehouse-longitude" type="number" step="any" min="-180" max="180" required value={lon} onInput={setLon} />
        </div>
        <Field label="Capacity (0 = unbounded)" name="warehouse-capacity" type="number" min="0" step="1" value={capacity} onInput={setCapacity} />
        <Status error={save.error} ok={save.ok} />
        <Busy busy={save.busy} type="submit" class="primary">
          {editing ? "Save warehouse" : "Create warehouse"}
        </Busy>
        {editing && (
          <button type="button" onClick={() => edit(null)}>
            Stop editing
          </button>
        )}
      </form>
      <Status error={list.error} />
      <table>
        <caption>Warehouses</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Address</th>
            <th scope="col">Lat, lon</th>
            <th scope="col">Capacity</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {(list.data?.warehouses ?? []).map((w) => (
            <tr key={w.id}>
              <th scope="row">{w.name}</th>
              <td>{w.address}</td>
              <td>
                {w.latitude}, {w.longitude}
              </td>
              <td>{String(w.capacity)}</td>
              <td>
                <button type="button" onClick={() => edit(w)}>
                  Edit<span class="sr-only"> {w.name}</span>
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && <Pager page={pager.page} hasNext={!!list.data.nextPageToken} onPrev={pager.prev} onNext={() => pager.next(list.data!.nextPageToken)} />}
    </Page>
  );
}
