// The same WatchStock consumed three ways through the gateway, as browser code would:
// connect-web's gRPC-web transport, connect-web's Connect transport, and Server-Sent
// Events with an EventSource-compatible client (the `eventsource` package). After a few
// Restocks all three must have seen the same events in the same order.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventSource } from "eventsource";

import { AuthService } from "../gen/stockmesh/auth/v1/auth_pb.js";
import { ProductService } from "../gen/stockmesh/products/v1/products_pb.js";
import { InventoryService } from "../gen/stockmesh/inventory/v1/inventory_pb.js";

const baseUrl = process.env.STOCKMESH_GATEWAY_URL;
const adminEmail = process.env.STOCKMESH_TEST_ADMIN_EMAIL;
const adminPassword = process.env.STOCKMESH_TEST_ADMIN_PASSWORD;
const EVENT = "stockmesh.inventory.v1.WatchStockResponse";
const WAIT_MS = 10_000;

function withToken(token) {
  return token
    ? [
        (next) => async (req) => {
          req.header.set("authorization", `Bearer ${token}`);
          return next(req);
        },
      ]
    : [];
}

const grpcWeb = (token) =>
  createGrpcWebTransport({ baseUrl, interceptors: withToken(token) });
const connect = (token) =>
  createConnectTransport({ baseUrl, interceptors: withToken(token) });

/// Resolves once `check()` is true, polling; rejects after WAIT_MS naming `what`.
async function until(what, check) {
  const deadline = Date.now() + WAIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/// Reads a server stream into `seen` until aborted; errors other than the abort land in
/// `failures`.
function collect(stream, seen, failures) {
  return (async () => {
    try {
      for await (const msg of stream) {
        seen.push({ eventId: msg.eventId, totalOnHand: String(msg.stock.totalOnHand) });
      }
    } catch (err) {
      if (err.name !== "AbortError" && !String(err).includes("abort")) failures.push(err);
    }
  })();
}

test("WatchStock: gRPC-web, Connect and SSE see the same events in the same order", async () => {
  const auth = createClient(AuthService, connect());
  const { accessToken } = await auth.login({ email: adminEmail, password: adminPassword });
  const products = createClient(ProductService, connect(accessToken));
  const inventory = createClient(InventoryService, grpcWeb(accessToken));
  const { product } = await products.createProduct({
    sku: `SKU-${randomUUID()}`,
    name: `watched-${randomUUID()}`,
    priceCents: 100n,
    currency: "USD",
  });
  const { warehouse } = await inventory.createWarehouse({
    name: `depot-${randomUUID()}`,
    address: "1 Road",
    latitude: 48.1,
    longitude: 11.5,
  });
  const restock = (quantity) =>
    inventory.restock({
      productId: product.id,
      warehouseId: warehouse.id,
      quantity: BigInt(quantity),
      requestId: randomUUID(),
    });
  await restock(5);

  const abort = new AbortController();
  const failures = [];
  const seen = { grpcWeb: [], connect: [], sse: [] };
  const request = { productIds: [product.id] };
  const readers = [
    collect(
      createClient(InventoryService, grpcWeb()).watchStock(request, { signal: abort.signal }),
      seen.grpcWeb,
      failures,
    ),
    collect(
      createClient(InventoryService, connect()).watchStock(request, { signal: abort.signal }),
      seen.connect,
      failures,
    ),
  ];
  const source = new EventSource(
    `${baseUrl}/v1/stock:watch?productIds=${encodeURIComponent(product.id)}`,
  );
  const ids = [];
  source.addEventListener(EVENT, (e) => {
    const msg = JSON.parse(e.data);
    ids.push(e.lastEventId);
    seen.sse.push({ eventId: msg.eventId, totalOnHand: msg.stock.totalOnHand });
  });
  source.addEventListener("error", (e) => {
    if (source.readyState === EventSource.CLOSED) failures.push(new Error(`SSE closed: ${e.message}`));
  });

  try {
    // Each has the current stock before anything changes.
    await until("the first messages", () =>
      Object.values(seen).every((s) => s.length >= 1),
    );
    for (const quantity of [1, 2, 3]) await restock(quantity);
    await until("three changes on every transport", () =>
      Object.values(seen).every((s) => s.length >= 4),
    );
    assert.deepEqual(failures, []);
    assert.deepEqual(seen.grpcWeb[0], { eventId: "", totalOnHand: "5" });
    assert.deepEqual(
      seen.grpcWeb.slice(1).map((m) => m.totalOnHand),
      ["6", "8", "11"],
    );
    assert.ok(seen.grpcWeb.slice(1).every((m) => m.eventId.length > 0));
    assert.deepEqual(seen.connect, seen.grpcWeb);
    assert.deepEqual(seen.sse, seen.grpcWeb);
    // SSE carries each event id as the event's id too (what Last-Event-ID resumes from).
    assert.deepEqual(ids.slice(1), seen.grpcWeb.slice(1).map((m) => m.eventId));
  } finally {
    source.close();
    abort.abort();
    await Promise.all(readers);
  }
});

test("Connect unary through the same transport, errors as Connect codes", async () => {
  const anonymous = createClient(ProductService, connect());
  await assert.rejects(anonymous.getProduct({ id: "does-not-exist" }), (err) => {
    assert.equal(err.code, 5); // Code.NotFound
    return true;
  });
});
