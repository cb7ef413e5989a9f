// The console's business story in a real browser (Debian's chromium driven by
// playwright-core) against a running `stockmesh up` — started by the Rust test
// `stockmesh-tests`' `console_e2e`, which passes:
//   STOCKMESH_CONSOLE_URL          the gateway, e.g. http://127.0.0.1:41234
//   STOCKMESH_TEST_ADMIN_EMAIL / STOCKMESH_TEST_ADMIN_PASSWORD
//   STOCKMESH_E2E_OUT              folder for screenshots (default ../target/console-e2e)
//   CHROMIUM                       browser binary (default /usr/bin/chromium)
//   STOCKMESH_E2E_TOKEN_TTL_SECS   the mesh's access-token lifetime, when the runner made it
//                                  short (the session must refresh before it, mid-test)
//
// The admin works over gRPC-web (the default), the customer over Connect
// (`?transport=connect`). Screenshots of every main screen go to STOCKMESH_E2E_OUT.
// Every page is checked for console errors, CSP violations and requests to other origins.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const BASE = (process.env.STOCKMESH_CONSOLE_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const ADMIN_EMAIL = process.env.STOCKMESH_TEST_ADMIN_EMAIL ?? "admin@stockmesh.local";
const ADMIN_PASSWORD = process.env.STOCKMESH_TEST_ADMIN_PASSWORD ?? "";
const OUT = process.env.STOCKMESH_E2E_OUT ?? new URL("../../target/console-e2e", import.meta.url).pathname;
const LIVE_MS = 2000;
const run = Date.now().toString(36);
mkdirSync(OUT, { recursive: true });

let browser;
const problems = [];
const shot = (page, name) => page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });

function watchPage(page, who) {
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${who} console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${who} page error: ${e.message}`));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(BASE) && !u.startsWith("blob:") && !u.startsWith("data:")) problems.push(`${who} external request: ${u}`);
  });
  return page;
}

async function newPage(who, opts = {}) {
  const context = await browser.newContext({ acceptDownloads: true, ...opts });
  return watchPage(await context.newPage(), who);
}

const state = {};

/** RFC 4180: quoted fields with doubled quotes, CRLF or LF; a trailing newline ends the last row. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') (field += '"'), i++;
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") row.push(field), (field = "");
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field), rows.push(row), (row = []), (field = "");
    } else field += c;
  }
  if (field || row.length) row.push(field), rows.push(row);
  return rows;
}

before(async () => {
  assert.ok(ADMIN_PASSWORD, "STOCKMESH_TEST_ADMIN_PASSWORD is required");
  // launch() gives every run a fresh temporary --user-data-dir of its own.
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
});

test("admin signs in, creates a warehouse and a product, restocks (a double click is one write)", async () => {
  const admin = await newPage("admin");
  state.admin = admin;
  await admin.goto(`${BASE}/signin`);
  await admin.getByLabel("Email").fill(ADMIN_EMAIL);
  await admin.getByLabel("Password").fill(ADMIN_PASSWORD);
  await shot(admin, "01-signin");
  await admin.getByRole("button", { name: "Sign in" }).click();
  await admin.getByRole("heading", { name: "Catalog" }).waitFor();
  assert.match(await admin.getByTestId("who").innerText(), /admin/);
  assert.equal(await admin.getByTestId("transport").innerText(), "grpc-web");

  await admin.getByRole("link", { name: "Warehouses" }).click();
  const wh = `E2E Barcelona ${run}`;
  await admin.getByLabel("Name").fill(wh);
  await admin.getByLabel("Address").fill("Carrer de Mallorca 1");
  await admin.getByLabel("Latitude").fill("41.39");
  await admin.getByLabel("Longitude").fill("2.17");
  await admin.getByRole("button", { name: "Create warehouse" }).click();
  await admin.getByRole("rowheader", { name: wh }).waitFor();
  await shot(admin, "02-warehouses");
  state.warehouse = wh;

  await admin.goto(`${BASE}/staff/products/new`);
  const name = `E2E Mug ${run}`;
  await admin.getByLabel("SKU").fill(`E2E-${run}`);
  await admin.getByLabel("Name").fill(name);
  await admin.getByLabel("Description").fill("A mug made by the console test");
  await admin.getByLabel("Price").fill("12.50");
  await shot(admin, "03-product-form");
  await admin.getByRole("button", { name: "Create product" }).click();
  await admin.getByRole("heading", { name }).waitFor();
  state.productUrl = admin.url();
  state.productId = state.productUrl.split("/").pop();
  state.productName = name;

  const restock = admin.locator('form[aria-labelledby="restock-h"]');
  await restock.getByLabel("Warehouse").selectOption({ label: wh });
  await restock.getByLabel("Units to add").fill("10");
  await restock.getByRole("button", { name: "Restock" }).dblclick();
  await restock.getByRole("status").filter({ hasText: "Restocked" }).waitFor();
  await admin.getByTestId("available").filter({ hasText: /^10$/ }).waitFor({ timeout: LIVE_MS });
  // A second submit of the same form is the same request id: still 10, not 20.
  await restock.getByRole("button", { name: "Restock" }).click();
  await restock.getByRole("status").filter({ hasText: "Restocked: 10 available" }).waitFor();
  assert.equal(await admin.getByTestId("on-hand").innerText(), "10");
  await shot(admin, "04-product-admin");
});

test("customer registers (Connect transport), orders two units, sees PENDING", async () => {
  const customer = await newPage("customer");
  state.customer = customer;
  await customer.goto(`${BASE}/register?transport=connect`);
  await customer.getByLabel("Email").fill(`ana-${run}@example.com`);
  await customer.getByLabel("Your name").fill("Ana E2E");
  await customer.getByLabel("Password").fill("correct horse battery");
  await shot(customer, "05-register");
  await customer.getByRole("button", { name: "Register" }).click();
  await customer.getByRole("heading", { name: "Catalog" }).waitFor();
  assert.equal(await customer.getByTestId("transport").innerText(), "connect");

  await customer.getByLabel("Search products").fill(`E2E Mug ${run}`);
  await customer.getByRole("button", { name: "Search" }).click();
  await customer.getByRole("link", { name: state.productName }).click();
  await customer.getByRole("heading", { name: state.productName }).waitFor();
  await customer.getByLabel("Quantity").fill("2");
  await customer.getByRole("button", { name: "Add to cart" }).click();
  await customer.getByRole("link", { name: "Cart (2)" }).click();
  await customer.getByRole("heading", { name: "Cart" }).waitFor();
  await customer.getByLabel("Deliver to a point").check();
  await customer.getByLabel("Latitude").fill("41.4");
  await customer.getByLabel("Longitude").fill("2.2");
  await shot(customer, "06-cart");
  await customer.getByRole("button", { name: "Place order" }).dblclick();
  await customer.getByRole("heading", { name: "My orders" }).waitFor();
  const card = customer.locator("li.order");
  await card.first().waitFor();
  assert.equal(await card.count(), 1, "a double click placed one order");
  state.orderId = await card.first().getAttribute("data-order-id");
  await card.first().getByTestId("order-status").filter({ hasText: "PENDING" }).waitFor();
  await customer.getByTestId("live-state").filter({ hasText: "Live" }).waitFor();
  await shot(customer, "07-my-orders-pending");
});

test("admin completes the order: the customer sees COMPLETED and the product page the stock change, live", async () => {
  const { admin, customer } = state;
  // A product page open before the completion, never reloaded.
  const watcher = await newPage("product watcher");
  await watcher.goto(state.productUrl);
  await watcher.getByTestId("reserved").filter({ hasText: /^2$/ }).waitFor();
  assert.equal(await watcher.getByTestId("on-hand").innerText(), "10");

  await admin.getByRole("link", { name: "Orders queue" }).click();
  const card = admin.locator(`li.order[data-order-id="${state.orderId}"]`);
  await card.waitFor();
  await shot(admin, "08-orders-queue");
  await card.getByRole("button", { name: "Complete" }).click();

  await customer.locator(`li.order[data-order-id="${state.orderId}"]`).getByTestId("order-status").filter({ hasText: "COMPLETED" }).waitFor({ timeout: LIVE_MS });
  await watcher.getByTestId("on-hand").filter({ hasText: /^8$/ }).waitFor({ timeout: LIVE_MS });
  assert.equal(await watcher.getByTestId("reserved").innerText(), "0");
  await shot(customer, "09-my-orders-completed");
  await shot(watcher, "10-product-live");
});

test("dashboard shows the sale, and its CSV matches the API", async () => {
  const { admin } = state;
  await admin.getByRole("link", { name: "Dashboard" }).click();
  const byProduct = admin.getByTestId("sales-by-product");
  const row = byProduct.locator(`tr[data-product-id="${state.productId}"]`);
  await row.waitFor({ timeout: 10_000 }).catch(async (e) => {
    await shot(admin, "11-dashboard-failed");
    const err = await admin.getByTestId("error").allInnerTexts();
    throw new Error(`the dashboard has no row for the sale: ${err.join(" | ") || e.message}`);
  });
  const cells = await row.locator("td").allInnerTexts();
  assert.equal(cells[1], "2", "units sold");
  await shot(admin, "11-dashboard");

  // The API's numbers, through the REST binding (JSON), with the admin's token.
  const token = await admin.evaluate(() => JSON.parse(localStorage.getItem("stockmesh.session")).accessToken);
  const api = async (path, accept = "application/json") => {
    const r = await fetch(`${BASE}${path}`, { headers: { authorization: `Bearer ${token}`, accept } });
    assert.equal(r.status, 200, `${path}: ${r.status}`);
    return accept === "text/csv" ? r.text() : r.json();
  };
  const download = admin.waitForEvent("download");
  await byProduct.getByRole("button", { name: /Download CSV/ }).click();
  const file = await download;
  assert.equal(file.suggestedFilename(), "sales-by-product.csv");
  const csv = parseCsv(readFileSync(await file.path(), "utf8"));
  const [head, ...rows] = csv;
  const col = (n) => head.indexOf(n);
  const mine = rows.find((r) => r[col("productId")] === state.productId);
  assert.ok(mine, `the CSV has a row for ${state.productId}: ${JSON.stringify(csv)}`);
  const json = await api(`/v1/reports/sales?groupBy=SALES_REPORT_GROUPING_PRODUCT&startTime=${new Date(Date.now() - 86400e3).toISOString()}&endTime=${new Date(Date.now() + 86400e3).toISOString()}`);
  const apiRow = json.rows.find((r) => r.productId === state.productId);
  assert.ok(apiRow, "the API reports the sale");
  assert.equal(mine[col("units")], String(apiRow.units));
  assert.equal(mine[col("revenueCents")], String(apiRow.revenueCents));
  assert.equal(apiRow.units, "2");
  assert.equal(apiRow.revenueCents, "2500");

  const stock = await api("/v1/reports/stock", "text/csv");
  assert.match(stock, new RegExp(`${state.productId}`));
});

test("the sessions outlive their access tokens (refresh rotation in the browser, streams reopened)", async (t) => {
  const ttl = Number(process.env.STOCKMESH_E2E_TOKEN_TTL_SECS ?? 0);
  if (!ttl || ttl > 30) return t.skip("access tokens live too long to expire during the test");
  const { admin, customer } = state;
  const stored = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("stockmesh.session") ?? "null"));
  const first = await stored(customer);
  // Wait past the first token's expiry: the session must have rotated on its own.
  const deadline = Date.now() + (ttl + 5) * 1000;
  while (Date.now() < first.expiresAt + 1000) {
    assert.ok(Date.now() < deadline, "waited too long");
    await customer.waitForTimeout(250);
  }
  const now = await stored(customer);
  assert.ok(now, "still signed in after the first access token expired");
  assert.notEqual(now.refreshToken, first.refreshToken, "the refresh token rotated");
  assert.ok(now.expiresAt > Date.now(), "the stored access token is current");
  // The orders stream (ended by the server when its token expired) is live again, and calls work.
  await customer.getByTestId("live-state").filter({ hasText: "Live" }).waitFor({ timeout: LIVE_MS * 2 });
  await customer.getByRole("link", { name: "Catalog" }).click();
  await customer.getByRole("heading", { name: "Catalog" }).waitFor();
  await customer.getByRole("link", { name: "My orders" }).click();
  await customer.locator(`li.order[data-order-id="${state.orderId}"]`).getByTestId("order-status").filter({ hasText: "COMPLETED" }).waitFor();
  await admin.getByRole("link", { name: "Users" }).click();
  await admin.getByRole("cell", { name: `ana-${run}@example.com`, exact: true }).waitFor();
  await shot(admin, "13-admin-users");
  assert.match(await customer.getByTestId("who").innerText(), /Ana E2E/);
});

test("phone width: the catalog and menu work at 390 px", async () => {
  const phone = await newPage("phone", { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.goto(`${BASE}/catalog`);
  await phone.getByRole("heading", { name: "Catalog" }).waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scroll at phone width (overflow ${overflow}px)`);
  await phone.getByRole("button", { name: "Menu" }).click();
  await phone.getByRole("link", { name: "Sign in" }).waitFor();
  await shot(phone, "12-phone-catalog");
  // Keyboard: from the top of the page the skip link comes first and moves focus to the content.
  await phone.evaluate(() => {
    document.body.tabIndex = -1;
    document.body.focus();
  });
  await phone.keyboard.press("Tab");
  assert.equal(await phone.evaluate(() => document.activeElement?.textContent), "Skip to content");
  await phone.keyboard.press("Enter");
  assert.equal(await phone.evaluate(() => document.activeElement?.id), "main");
});

test("no console errors, CSP violations or external requests", () => {
  assert.deepEqual(problems, []);
});
