// Calls a running stockmesh gateway the way a browser app would: generated
// protobuf-es code + @connectrpc/connect-web's gRPC-web transport (over Node's
// global fetch), and checks /openapi.json with a real OpenAPI validator.
//
// The gateway's URL comes from STOCKMESH_GATEWAY_URL; the admin credentials from
// STOCKMESH_TEST_ADMIN_EMAIL / STOCKMESH_TEST_ADMIN_PASSWORD. The Rust integration
// test `node::node_client` starts a mesh and runs this with those set.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import SwaggerParser from "@apidevtools/swagger-parser";

import { AuthService, Role } from "../gen/stockmesh/auth/v1/auth_pb.js";
import { ProductService } from "../gen/stockmesh/products/v1/products_pb.js";
import { InventoryService } from "../gen/stockmesh/inventory/v1/inventory_pb.js";

const baseUrl = process.env.STOCKMESH_GATEWAY_URL;
const adminEmail = process.env.STOCKMESH_TEST_ADMIN_EMAIL;
const adminPassword = process.env.STOCKMESH_TEST_ADMIN_PASSWORD;
if (!baseUrl || !adminEmail || !adminPassword) {
  throw new Error(
    "set STOCKMESH_GATEWAY_URL, STOCKMESH_TEST_ADMIN_EMAIL and STOCKMESH_TEST_ADMIN_PASSWORD",
  );
}

function transport(token) {
  return createGrpcWebTransport({
    baseUrl,
    interceptors: token
      ? [
          (next) => async (req) => {
            req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
        ]
      : [],
  });
}

async function adminToken() {
  const auth = createClient(AuthService, transport());
  const res = await auth.login({ email: adminEmail, password: adminPassword });
  assert.equal(res.tokenType, "Bearer");
  assert.ok(res.accessToken.length > 20);
  return res.accessToken;
}

test("gRPC-web: sign in, create and read a product", async () => {
  const token = await adminToken();
  const admin = createClient(ProductService, transport(token));
  const name = `node-${randomUUID()}`;
  const { product } = await admin.createProduct({
    sku: `SKU-${randomUUID()}`,
    name,
    description: "created by the Node test",
    priceCents: 4200n,
    currency: "USD",
  });
  assert.ok(product.id);
  assert.equal(product.priceCents, 4200n);

  const anonymous = createClient(ProductService, transport());
  const got = await anonymous.getProduct({ id: product.id });
  assert.equal(got.product.name, name);
  const byName = await anonymous.getProductByName({ name });
  assert.equal(byName.product.id, product.id);

  // A second upstream behind the same port: inventory knows nothing of it yet.
  const stock = createClient(InventoryService, transport());
  try {
    const s = await stock.getStock({ productId: product.id });
    assert.equal(s.stock.totalOnHand, 0n);
  } catch (err) {
    assert.equal(ConnectError.from(err).code, Code.NotFound);
  }
});

test("gRPC-web: errors arrive as Connect error codes", async () => {
  const anonymous = createClient(ProductService, transport());
  await assert.rejects(anonymous.getProduct({ id: "does-not-exist" }), (err) => {
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.NotFound);
    return true;
  });
  const forged = createClient(AuthService, transport("not-a-jwt"));
  await assert.rejects(forged.getProfile({}), (err) => {
    assert.equal(ConnectError.from(err).code, Code.Unauthenticated);
    return true;
  });
});

test("gRPC-web: roles are still enforced by the services", async () => {
  const token = await adminToken();
  const auth = createClient(AuthService, transport(token));
  const me = await auth.getProfile({});
  assert.equal(me.user.role, Role.ADMIN);
  const email = `customer-${randomUUID()}@example.com`;
  await auth.createUser({
    email,
    password: "correct-horse-battery",
    displayName: "Node Customer",
    role: Role.CUSTOMER,
  });
  const login = await createClient(AuthService, transport()).login({
    email,
    password: "correct-horse-battery",
  });
  const customer = createClient(ProductService, transport(login.accessToken));
  await assert.rejects(
    customer.createProduct({ sku: "x", name: `n-${randomUUID()}`, priceCents: 1n }),
    (err) => {
      assert.equal(ConnectError.from(err).code, Code.PermissionDenied);
      return true;
    },
  );
});

test("OpenAPI document validates", async () => {
  const res = await fetch(`${baseUrl}/openapi.json`);
  assert.equal(res.status, 200);
  const doc = await res.json();
  const api = await SwaggerParser.validate(doc);
  assert.equal(api.openapi, "3.0.3");
  assert.ok(api.paths["/v1/products/{id}"].get);
  assert.ok(api.paths["/v1/stock/{product_id}:restock"].post);
  // Server streams document both stream formats.
  const watch = api.paths["/v1/stock:watch"].get.responses["200"].content;
  assert.ok(watch["text/event-stream"]);
  assert.ok(watch["application/x-ndjson"]);
});

test("REST through fetch, with CORS headers for the browser", async () => {
  const res = await fetch(`${baseUrl}/v1/products?pageSize=1`, {
    headers: { origin: "https://example.org" },
  });
  assert.equal(res.status, 200);
  assert.ok(res.headers.get("access-control-allow-origin"));
  const body = await res.json();
  assert.ok(Array.isArray(body.products));
  assert.equal(typeof body.nextPageToken, "string");
});
