#!/usr/bin/env python3
"""The whole stockmesh business story, told by an outside client.

This client knows only the public contract (shared/API.md) and the four service
addresses. It has no generated code and no .proto files: every request and response
class is built at run time from the servers' own reflection service
(grpc.reflection.v1, falling back to v1alpha) through a protobuf DescriptorPool, and
every call is a plain unary gRPC call, except the two live streams: WatchStock (one
product) and WatchOrders (as the customer) are read in background threads from before
the first restock to the end, and each restock of that product and each change of the
customer's order must show on them within 1 s of the write's answer (LIVE_DEADLINE_S).

The story: log in as the bootstrap admin, register customers, create an operator,
build a catalog and warehouses, restock, place multi-line orders that are routed to
the nearest warehouse able to serve each line (great-circle distance), replay them
(also concurrently), be refused for short stock, oversell-proof concurrent orders,
cancel and complete. A local ledger mirrors every stock movement the contract
promises, and after every step GetStock must agree with it exactly, per product and
per warehouse (on_hand, reserved, available and the totals).

Every run uses fresh, uniquely suffixed names, so it can be repeated against the same
mesh. Exit status 0 means every assertion held; 1 means a step failed (the failing
step and the reason are printed); 2 means the mesh could not be reached.

    python story.py [--auth HOST:PORT] [--products ..] [--inventory ..] [--orders ..]
                    [--admin-email E] [--admin-password P] [--wait-ready SECS] [--ready-only]

Addresses default to $STORY_<SVC>_ADDR, else 127.0.0.1:$STOCKMESH_<SVC>_PORT, else the
well-known ports 50051..50054. The admin defaults to $STOCKMESH_ADMIN_EMAIL /
$STOCKMESH_ADMIN_PASSWORD (the same variables the mesh reads to bootstrap it).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

CALL_TIMEOUT_S = 30.0
LIVE_DEADLINE_S = 1.0  # issue 11: a watcher sees a write within a second of its answer
StatusCode = grpc.StatusCode


class StoryFailure(Exception):
    """An assertion of the story did not hold."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise StoryFailure(what)


def eq(actual, expected, what: str) -> None:
    if actual != expected:
        raise StoryFailure(f"{what}: expected {expected!r}, got {actual!r}")


# --------------------------------------------------------------------------- reflection


class _V1Stub:
    """grpc.reflection.v1 has the same messages on the wire as v1alpha; only the method
    path differs. grpcio-reflection ships a v1alpha client only, so this stub lets its
    descriptor database speak v1 (the current standard) with the v1alpha messages."""

    def __init__(self, channel: grpc.Channel):
        self.ServerReflectionInfo = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )


def reflection_db(channel: grpc.Channel, version: str) -> ProtoReflectionDescriptorDatabase:
    db = ProtoReflectionDescriptorDatabase(channel)
    if version == "v1":
        # The database keeps its stub in a private attribute; swapping it is the only
        # way to reuse its (correct) descriptor bookkeeping over the v1 protocol.
        db._stub = _V1Stub(channel)  # noqa: SLF001
    return db


class Service:
    """One gRPC service, its messages known only through the server's reflection."""

    def __init__(self, address: str, full_name: str):
        self.address = address
        self.full_name = full_name
        self.channel = grpc.insecure_channel(address)
        self.reflection_version = None
        self.listed: list[str] = []
        last_error = None
        for version in ("v1", "v1alpha"):
            try:
                db = reflection_db(self.channel, version)
                self.listed = list(db.get_services())
                self.reflection_version = version
                break
            except grpc.RpcError as err:
                last_error = err
        if self.reflection_version is None:
            raise ConnectionError(f"{address}: no reflection service answered: "
                                  f"{last_error.code().name}: {last_error.details()}")
        self.pool = descriptor_pool.DescriptorPool(db)
        try:
            self.descriptor = self.pool.FindServiceByName(full_name)
        except KeyError:
            raise StoryFailure(f"{address}: reflection does not describe {full_name} "
                               f"(it lists {self.listed})") from None
        self._methods: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def method(self, name: str):
        with self._lock:
            if name not in self._methods:
                m = self.descriptor.methods_by_name.get(name)
                check(m is not None, f"{self.full_name} has no method {name} in reflection")
                check(not m.client_streaming, f"{self.full_name}/{name} is client streaming")
                req = message_factory.GetMessageClass(m.input_type)
                resp = message_factory.GetMessageClass(m.output_type)
                # Unary or server streaming, as reflection describes the method.
                kind = self.channel.unary_stream if m.server_streaming else self.channel.unary_unary
                stub = kind(
                    f"/{self.full_name}/{name}",
                    request_serializer=req.SerializeToString,
                    response_deserializer=resp.FromString,
                )
                self._methods[name] = (req, resp, stub, m.server_streaming)
            return self._methods[name]

    def call(self, name: str, body: dict | None = None, token: str | None = None):
        req_cls, _, stub, streaming = self.method(name)
        check(not streaming, f"{self.full_name}/{name} is server streaming: use watch()")
        request = json_format.ParseDict(body or {}, req_cls())
        metadata = [("authorization", f"Bearer {token}")] if token else None
        return stub(request, metadata=metadata, timeout=CALL_TIMEOUT_S)

    def watch(self, name: str, body: dict | None = None, token: str | None = None) -> "Watch":
        """Opens the server-streaming `name` (no deadline) and reads it in a background
        thread; see Watch."""
        req_cls, _, stub, streaming = self.method(name)
        check(streaming, f"{self.full_name}/{name} is not server streaming in reflection")
        request = json_format.ParseDict(body or {}, req_cls())
        metadata = [("authorization", f"Bearer {token}")] if token else None
        return Watch(f"{self.full_name}/{name}", stub(request, metadata=metadata))

    def fails(self, code: StatusCode, name: str, body: dict | None = None,
              token: str | None = None, also: tuple = ()) -> grpc.RpcError:
        """Calls `name` and requires it to fail with `code` (or one of `also`)."""
        try:
            resp = self.call(name, body, token)
        except grpc.RpcError as err:
            allowed = (code, *also)
            check(err.code() in allowed,
                  f"{name}: expected {'/'.join(c.name for c in allowed)}, "
                  f"got {err.code().name}: {err.details()}")
            return err
        raise StoryFailure(f"{name}: expected {code.name}, but it succeeded: "
                           f"{json_format.MessageToJson(resp, indent=None)}")


class Watch:
    """A server stream read by a background thread: every message is kept with the
    monotonic time it arrived, so the story can ask for the first message matching a
    condition and measure how long after a write it came."""

    def __init__(self, name: str, call):
        self.name = name
        self.call = call
        self.messages: list[tuple[float, object]] = []
        self.error: grpc.RpcError | None = None  # how the stream ended, if it did
        self.ended = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name=f"watch {name}", daemon=True)
        self._thread.start()

    def _read(self):
        try:
            for msg in self.call:
                with self._cond:
                    self.messages.append((time.monotonic(), msg))
                    self._cond.notify_all()
        except grpc.RpcError as err:
            with self._cond:
                self.error = err
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def wait_open(self, timeout_s: float = CALL_TIMEOUT_S):
        """Waits for the response headers: the server has opened the stream (and, for the
        Watch RPCs, subscribed to its feed) once it sends them."""
        done = threading.Event()
        threading.Thread(target=lambda: (self.call.initial_metadata(), done.set()), daemon=True).start()
        check(done.wait(timeout_s), f"{self.name}: no response headers within {timeout_s}s")
        self.alive()

    def alive(self):
        with self._cond:
            if self.ended:
                how = (f"{self.error.code().name}: {self.error.details()}" if self.error else "OK")
                raise StoryFailure(f"{self.name} ended early with {how}")

    def next_match(self, pred, start: int = 0, timeout_s: float = 1.0, what: str = "a message"):
        """The first message from index `start` on for which pred holds, waiting up to
        timeout_s for it: (index, arrival time, message)."""
        deadline = time.monotonic() + timeout_s
        i = start
        with self._cond:
            while True:
                while i < len(self.messages):
                    at, msg = self.messages[i]
                    if pred(msg):
                        return i, at, msg
                    i += 1
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    break
                self._cond.wait(left)
        self.alive()
        raise StoryFailure(f"{self.name}: {what} did not arrive within {timeout_s * 1000:.0f} ms "
                           f"({len(self.messages) - start} other messages came)")

    def count(self) -> int:
        with self._cond:
            return len(self.messages)

    def cancel(self, timeout_s: float = 5.0) -> grpc.RpcError | None:
        """Cancels the stream from the client side and waits for the reader to stop;
        the stream must have been alive until then and must end CANCELLED."""
        with self._cond:
            was_alive = not self.ended
            early = self.error
        self.call.cancel()
        self._thread.join(timeout_s)
        check(not self._thread.is_alive(), f"{self.name}: reader still running {timeout_s}s after cancel")
        if not was_alive:
            how = f"{early.code().name}: {early.details()}" if early else "OK"
            raise StoryFailure(f"{self.name} had ended before the cancel with {how}")
        eq(self.error.code() if self.error else None, StatusCode.CANCELLED, f"{self.name} end after cancel")
        return self.error


def enum_name(message, field: str) -> str:
    fd = message.DESCRIPTOR.fields_by_name[field]
    value = getattr(message, field)
    return fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else str(value)


def health_status(address: str, service: str = "") -> str:
    """grpc.health.v1 Check, its messages also taken from reflection."""
    h = Service(address, "grpc.health.v1.Health")
    try:
        resp = h.call("Check", {"service": service})
        return enum_name(resp, "status")
    finally:
        h.channel.close()


def wait_ready(addresses: dict[str, str], services: dict[str, str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = dict(addresses)
    while pending:
        for svc, addr in list(pending.items()):
            try:
                if health_status(addr, services[svc]) == "SERVING":
                    del pending[svc]
            except (grpc.RpcError, ConnectionError, StoryFailure):
                pass
        if pending:
            if time.monotonic() > deadline:
                raise ConnectionError(f"not SERVING after {timeout_s}s: {sorted(pending)}")
            time.sleep(0.2)


# --------------------------------------------------------------------------- ledger


class Ledger:
    """What the stock must be, derived only from the contract and the story's moves:
    on_hand changes by restocks, adjustments and commits; reserved by reserves,
    releases and commits."""

    def __init__(self):
        self.rows: dict[tuple[str, str], list[int]] = {}

    def _row(self, pid, wid):
        return self.rows.setdefault((pid, wid), [0, 0])

    def restock(self, pid, wid, q):
        self._row(pid, wid)[0] += q

    def adjust(self, pid, wid, delta):
        self._row(pid, wid)[0] += delta

    def reserve(self, pid, wid, q):
        self._row(pid, wid)[1] += q

    def release(self, pid, wid, q):
        self._row(pid, wid)[1] -= q

    def commit(self, pid, wid, q):
        row = self._row(pid, wid)
        row[0] -= q
        row[1] -= q

    def available(self, pid, wid):
        on_hand, reserved = self.rows.get((pid, wid), (0, 0))
        return on_hand - reserved

    def expected(self, pid) -> dict[str, tuple[int, int]]:
        return {w: tuple(v) for (p, w), v in self.rows.items() if p == pid}


# --------------------------------------------------------------------------- the story


class Story:
    def __init__(self, args):
        self.args = args
        self.run = uuid.uuid4().hex[:10]
        self.ledger = Ledger()
        self.step_no = 0
        self.started = time.monotonic()
        self.names: dict[str, str] = {}  # id -> readable name, for messages
        self.watches: list[Watch] = []
        self.delays: list[tuple[str, float]] = []  # (what, seconds after the answer)

    # ----- output

    def step(self, title: str):
        self.step_no += 1
        self._t0 = time.monotonic()
        print(f"[{self.step_no:02d}] {title}", flush=True)

    def note(self, text: str):
        print(f"       {text}", flush=True)

    def done(self):
        print(f"       ok ({(time.monotonic() - self._t0) * 1000:.0f} ms)", flush=True)

    # ----- stock

    def stock(self, pid):
        return self.inv.call("GetStock", {"product_id": pid}).stock

    def verify_stock(self, pids=None):
        """GetStock (public, no token) must equal the ledger for each product exactly."""
        for pid in pids or self.products.values():
            s = self.stock(pid)
            eq(s.product_id, pid, "GetStock product_id")
            actual = {}
            for w in s.warehouses:
                check(w.warehouse_id not in actual,
                      f"GetStock lists warehouse {w.warehouse_id} twice for {self.names[pid]}")
                eq(w.available, w.on_hand - w.reserved,
                   f"available of {self.names[pid]}@{self.names.get(w.warehouse_id)}")
                check(w.on_hand >= w.reserved >= 0,
                      f"invariant on_hand >= reserved >= 0 broken for {self.names[pid]}"
                      f"@{self.names.get(w.warehouse_id)}: {w.on_hand}/{w.reserved}")
                actual[w.warehouse_id] = (w.on_hand, w.reserved)
            expected = self.ledger.expected(pid)
            for wid in set(actual) | set(expected):
                a = actual.get(wid, (0, 0))
                e = expected.get(wid, (0, 0))
                eq(a, e, f"(on_hand, reserved) of {self.names[pid]}@{self.names.get(wid, wid)}")
            eq(s.total_on_hand, sum(v[0] for v in actual.values()), f"total_on_hand of {self.names[pid]}")
            eq(s.total_reserved, sum(v[1] for v in actual.values()), f"total_reserved of {self.names[pid]}")
            eq(s.total_available, s.total_on_hand - s.total_reserved, f"total_available of {self.names[pid]}")

    def stock_line(self, pid):
        s = self.stock(pid)
        parts = [f"{self.names.get(w.warehouse_id, w.warehouse_id[:8])} {w.on_hand}/{w.reserved}/{w.available}"
                 for w in sorted(s.warehouses, key=lambda w: self.names.get(w.warehouse_id, ""))]
        return (f"{self.names[pid]:<7} total {s.total_on_hand}/{s.total_reserved}/{s.total_available}"
                f"  [{', '.join(parts)}]  (on_hand/reserved/available)")

    # ----- live updates

    def live(self, watch: "Watch", start: int, answered_at: float, pred, what: str):
        """The first message of `watch` from index `start` on matching pred must arrive
        within LIVE_DEADLINE_S of `answered_at` (the write's answer); records the delay
        (negative when the event overtook the answer)."""
        left = answered_at + LIVE_DEADLINE_S - time.monotonic()
        i, at, msg = watch.next_match(pred, start, max(left, 0.0), what)
        delay = at - answered_at
        check(delay <= LIVE_DEADLINE_S, f"{watch.name}: {what} came {delay * 1000:.0f} ms after the answer")
        self.delays.append((what, delay))
        self.note(f"{watch.name.rsplit('/', 1)[1]}: {what}, {delay * 1000:+.1f} ms from the answer")
        return i, msg

    def close_watches(self):
        """Cancels whatever stream is still open (a failed story must still exit)."""
        for w in self.watches:
            if not w.ended:
                w.call.cancel()

    # ----- orders

    def create_order(self, token, request_id, items, lat=None, lon=None, warehouse=None, customer_id=None):
        body = {"request_id": request_id,
                "items": [{"product_id": self.products[p], "quantity": q} for p, q in items]}
        if lat is not None:
            body["latitude"], body["longitude"] = lat, lon
        if warehouse is not None:
            body["warehouse_id"] = self.warehouses[warehouse]
        if customer_id is not None:
            body["customer_id"] = customer_id
        return self.ord.call("CreateOrder", body, token).order

    def expect_routing(self, order, expected: list[tuple[str, int, str]], what: str):
        """expected: [(product key, quantity, warehouse key)] in line order; updates the
        ledger with the reservations the order took."""
        eq(len(order.items), len(expected), f"{what}: number of lines")
        for item, (p, q, w) in zip(order.items, expected):
            eq(item.product_id, self.products[p], f"{what}: line product")
            eq(item.quantity, q, f"{what}: quantity of {p}")
            eq(self.names.get(item.warehouse_id, item.warehouse_id), w,
               f"{what}: warehouse chosen for {p} x{q}")
            check(item.reservation_id != "", f"{what}: line {p} has no reservation_id")
            self.ledger.reserve(item.product_id, item.warehouse_id, item.quantity)

    def lines(self, order):
        return [(i.product_id, i.warehouse_id, i.quantity) for i in order.items]

    # ----- the story itself

    def run_story(self):
        a = self.args
        R = self.run

        self.step("reflection: every address serves its service, message classes built from it")
        self.auth = Service(a.auth, "stockmesh.auth.v1.AuthService")
        self.prod = Service(a.products, "stockmesh.products.v1.ProductService")
        self.inv = Service(a.inventory, "stockmesh.inventory.v1.InventoryService")
        self.ord = Service(a.orders, "stockmesh.orders.v1.OrderService")
        for s in (self.auth, self.prod, self.inv, self.ord):
            check(s.full_name in s.listed, f"{s.address} reflection does not list {s.full_name}: {s.listed}")
            check("grpc.health.v1.Health" in s.listed, f"{s.address} reflection does not list grpc.health.v1.Health")
            # Both reflection protocols must answer (grpcurl uses v1, older tools v1alpha).
            for version in ("v1", "v1alpha"):
                listed = list(reflection_db(s.channel, version).get_services())
                check(s.full_name in listed, f"{s.address} reflection {version} does not list {s.full_name}")
            eq(health_status(s.address, s.full_name), "SERVING", f"health of {s.full_name}")
            self.note(f"{s.address:<22} {s.full_name} ({len(s.descriptor.methods)} methods, "
                      f"reflection v1+v1alpha, SERVING)")
        self.done()

        # ------------------------------------------------------------------ auth
        self.step(f"log in as the bootstrap admin {a.admin_email}")
        login = self.auth.call("Login", {"email": a.admin_email, "password": a.admin_password})
        eq(login.token_type, "Bearer", "token_type")
        check(login.expires_in > 0, f"expires_in > 0, got {login.expires_in}")
        check(login.access_token and login.refresh_token, "Login returns both tokens")
        admin = login.access_token
        profile = self.auth.call("GetProfile", {}, admin).user
        eq(enum_name(profile, "role"), "ROLE_ADMIN", "admin's role")
        eq(profile.email, a.admin_email, "admin's email")
        self.done()

        self.step("register a customer; duplicate email refused; wrong password refused")
        cust_email = f"alice.{R}@example.com"
        cust_pw = f"alice-pw-{R}"
        reg = self.auth.call("Register", {"email": cust_email, "password": cust_pw,
                                          "display_name": "Alice"}).user
        eq(enum_name(reg, "role"), "ROLE_CUSTOMER", "registered user's role")
        self.auth.fails(StatusCode.ALREADY_EXISTS, "Register",
                        {"email": cust_email, "password": cust_pw, "display_name": "Alice again"})
        self.auth.fails(StatusCode.INVALID_ARGUMENT, "Register",
                        {"email": f"short.{R}@example.com", "password": "short", "display_name": "S"})
        self.auth.fails(StatusCode.INVALID_ARGUMENT, "Register",
                        {"email": "not-an-email", "password": cust_pw, "display_name": "S"})
        bad = self.auth.fails(StatusCode.UNAUTHENTICATED, "Login", {"email": cust_email, "password": "wrong-password"})
        nobody = self.auth.fails(StatusCode.UNAUTHENTICATED, "Login",
                                 {"email": f"nobody.{R}@example.com", "password": "wrong-password"})
        eq(bad.details(), nobody.details(), "one generic message for bad credentials")
        alice_login = self.auth.call("Login", {"email": cust_email, "password": cust_pw})
        alice = alice_login.access_token
        me = self.auth.call("GetProfile", {}, alice).user
        eq(me.id, reg.id, "customer's profile id")
        self.alice_id = reg.id
        self.auth.fails(StatusCode.UNAUTHENTICATED, "GetProfile", {})
        self.auth.fails(StatusCode.UNAUTHENTICATED, "GetProfile", {}, "not-a-jwt")
        self.note(f"customer {cust_email} id {reg.id}")
        self.done()

        self.step("refresh rotates; reusing a rotated refresh token revokes the family")
        r1 = self.auth.call("Refresh", {"refresh_token": alice_login.refresh_token})
        check(r1.refresh_token != alice_login.refresh_token, "Refresh returns a new refresh token")
        self.auth.call("GetProfile", {}, r1.access_token)
        self.auth.fails(StatusCode.UNAUTHENTICATED, "Refresh", {"refresh_token": alice_login.refresh_token})
        self.auth.fails(StatusCode.UNAUTHENTICATED, "Refresh", {"refresh_token": r1.refresh_token})
        self.done()

        self.step("admin creates an operator; customers cannot")
        op_email = f"olga.{R}@example.com"
        op_pw = f"olga-pw-{R}"
        self.auth.fails(StatusCode.PERMISSION_DENIED, "CreateUser",
                        {"email": f"x.{R}@example.com", "password": op_pw, "display_name": "X",
                         "role": "ROLE_ADMIN"}, alice)
        op_user = self.auth.call("CreateUser", {"email": op_email, "password": op_pw,
                                                "display_name": "Olga", "role": "ROLE_OPERATOR"}, admin).user
        eq(enum_name(op_user, "role"), "ROLE_OPERATOR", "created user's role")
        op = self.auth.call("Login", {"email": op_email, "password": op_pw}).access_token
        self.done()

        # ------------------------------------------------------------------ catalog
        self.step("catalog: supplier and five products (operator); rules on sku/name/roles")
        supplier = self.prod.call("CreateSupplier", {"name": f"Acme {R}", "contact_email": f"sales.{R}@acme.test",
                                                     "phone": "+33 1 23 45 67 89"}, op).supplier
        catalog = {"A": ("Anvil", 1299), "B": ("Bolt", 250), "C": ("Crate", 4500),
                   "D": ("Dynamo", 999), "E": ("Echo", 100)}
        self.products: dict[str, str] = {}
        self.prices: dict[str, int] = {}
        for key, (name, price) in catalog.items():
            p = self.prod.call("CreateProduct", {"sku": f"{key}-{R}", "name": f"{name} {R}",
                                                 "description": f"story product {key}", "price_cents": price,
                                                 "currency": "USD", "supplier_id": supplier.id}, op).product
            eq(p.price_cents, price, f"price of {name}")
            eq(p.supplier_id, supplier.id, f"supplier of {name}")
            self.products[key] = p.id
            self.prices[key] = price
            self.names[p.id] = name
        self.prod.fails(StatusCode.ALREADY_EXISTS, "CreateProduct",
                        {"sku": f"A-{R}", "name": f"Another {R}", "price_cents": 1}, op)
        self.prod.fails(StatusCode.ALREADY_EXISTS, "CreateProduct",
                        {"sku": f"Z-{R}", "name": f"Anvil {R}", "price_cents": 1}, op)
        self.prod.fails(StatusCode.INVALID_ARGUMENT, "CreateProduct",
                        {"sku": f"N-{R}", "name": f"Negative {R}", "price_cents": -1}, op)
        self.prod.fails(StatusCode.PERMISSION_DENIED, "CreateProduct",
                        {"sku": f"Q-{R}", "name": f"Quill {R}", "price_cents": 1}, alice)
        self.prod.fails(StatusCode.UNAUTHENTICATED, "CreateProduct",
                        {"sku": f"Q-{R}", "name": f"Quill {R}", "price_cents": 1})
        # API.md says only "must exist"; any of these codes keeps that promise.
        self.prod.fails(StatusCode.FAILED_PRECONDITION, "CreateProduct",
                        {"sku": f"S-{R}", "name": f"Orphan {R}", "price_cents": 1,
                         "supplier_id": str(uuid.uuid4())}, op,
                        also=(StatusCode.NOT_FOUND, StatusCode.INVALID_ARGUMENT))
        # Reads are public; walk the run's products two per page.
        eq(self.prod.call("GetProduct", {"id": self.products["A"]}).product.sku, f"A-{R}", "GetProduct sku")
        eq(self.prod.call("GetProductByName", {"name": f"Crate {R}"}).product.id, self.products["C"],
           "GetProductByName")
        seen, token, pages = [], "", 0
        while True:
            page = self.prod.call("ListProducts", {"name_contains": R, "page_size": 2, "page_token": token})
            seen += [p.id for p in page.products]
            pages += 1
            token = page.next_page_token
            if not token or pages > 10:
                break
        eq(sorted(seen), sorted(self.products.values()), "ListProducts name_contains walks every product once")
        check(pages >= 3, f"5 products at page_size 2 take 3 pages, took {pages}")
        self.note("products: " + ", ".join(f"{catalog[k][0]} ${self.prices[k] / 100:.2f}" for k in catalog))
        self.done()

        self.step("warehouses: Paris, Berlin, Madrid, North (60N 15E), Channel (50N 0E)")
        sites = {"PAR": (48.8566, 2.3522), "BER": (52.5200, 13.4050), "MAD": (40.4168, -3.7038),
                 "NORTH": (60.0, 15.0), "CHANNEL": (50.0, 0.0)}
        self.warehouses: dict[str, str] = {}
        for key, (lat, lon) in sites.items():
            w = self.inv.call("CreateWarehouse", {"name": f"{key} {R}", "address": f"{key} street 1",
                                                  "latitude": lat, "longitude": lon, "capacity": 100000}, op).warehouse
            eq((w.latitude, w.longitude), (lat, lon), f"coordinates of {key}")
            self.warehouses[key] = w.id
            self.names[w.id] = key
        self.inv.fails(StatusCode.ALREADY_EXISTS, "CreateWarehouse",
                       {"name": f"PAR {R}", "address": "x", "latitude": 1, "longitude": 1, "capacity": 1}, op)
        self.inv.fails(StatusCode.INVALID_ARGUMENT, "CreateWarehouse",
                       {"name": f"Bad lat {R}", "address": "x", "latitude": 91, "longitude": 0, "capacity": 1}, op)
        self.inv.fails(StatusCode.INVALID_ARGUMENT, "CreateWarehouse",
                       {"name": f"Bad lon {R}", "address": "x", "latitude": 0, "longitude": -180.5, "capacity": 1}, op)
        self.inv.fails(StatusCode.PERMISSION_DENIED, "CreateWarehouse",
                       {"name": f"Alice's {R}", "address": "x", "latitude": 0, "longitude": 0, "capacity": 1}, alice)
        eq(self.inv.call("GetWarehouse", {"id": self.warehouses["BER"]}, alice).warehouse.name, f"BER {R}",
           "GetWarehouse name")
        self.verify_stock()  # nothing stocked yet: every total is zero
        self.done()

        # ------------------------------------------------------------------ live updates
        self.step("live: WatchStock(Anvil) and WatchOrders (as Alice) open in background threads;"
                  " the stock stream starts with its snapshot")
        pid_a = self.products["A"]
        self.stock_watch = self.inv.watch("WatchStock", {"product_ids": [pid_a]})
        self.watches.append(self.stock_watch)
        _, _, snap = self.stock_watch.next_match(lambda m: True, 0, CALL_TIMEOUT_S, "the snapshot")
        eq(snap.event_id, "", "WatchStock first message event_id (the snapshot)")
        eq(enum_name(snap, "cause"), "STOCK_CHANGE_CAUSE_UNSPECIFIED", "WatchStock snapshot cause")
        eq(snap.stock.product_id, pid_a, "WatchStock snapshot product")
        eq((snap.stock.total_on_hand, snap.stock.total_reserved, snap.stock.total_available), (0, 0, 0),
           "WatchStock snapshot totals before any restock")
        self.order_watch = self.ord.watch("WatchOrders", {}, alice)
        self.watches.append(self.order_watch)
        # WatchOrders has no first message: its response headers say it is subscribed.
        self.order_watch.wait_open()
        self.order_watch.alive()
        self.stock_watch.alive()
        self.done()

        # ------------------------------------------------------------------ restock
        self.step("restock (operator), replay of a restock moves nothing")
        plan = [("A", "PAR", 10), ("A", "BER", 5), ("B", "PAR", 2), ("B", "BER", 20), ("B", "MAD", 8),
                ("C", "MAD", 4), ("D", "PAR", 5), ("E", "NORTH", 2), ("E", "CHANNEL", 2)]
        first_a_par = None
        seen = 1  # the snapshot
        for p, w, q in plan:
            rid = f"restock-{R}-{p}-{w}"
            resp = self.inv.call("Restock", {"product_id": self.products[p], "warehouse_id": self.warehouses[w],
                                             "quantity": q, "request_id": rid}, op)
            answered_at = time.monotonic()
            self.ledger.restock(self.products[p], self.warehouses[w], q)
            if (p, w) == ("A", "PAR"):
                first_a_par = resp
            if p == "A":
                total = resp.stock.total_on_hand
                i, msg = self.live(self.stock_watch, seen, answered_at,
                                   lambda m, t=total: m.event_id != "" and m.stock.total_on_hand == t,
                                   f"Anvil total_on_hand {total} after Restock {w} +{q}")
                eq(enum_name(msg, "cause"), "STOCK_CHANGE_CAUSE_RESTOCK", "WatchStock cause of a restock")
                eq(msg.stock.product_id, self.products["A"], "WatchStock product")
                eq((msg.stock.total_reserved, msg.stock.total_available), (0, total), "WatchStock totals")
                seen = i + 1
        self.verify_stock()
        replay = self.inv.call("Restock", {"product_id": self.products["A"], "warehouse_id": self.warehouses["PAR"],
                                           "quantity": 10, "request_id": f"restock-{R}-A-PAR"}, op)
        eq(replay.stock.total_on_hand, first_a_par.stock.total_on_hand, "replayed Restock returns the first result")
        self.verify_stock()
        self.inv.fails(StatusCode.NOT_FOUND, "Restock",
                       {"product_id": str(uuid.uuid4()), "warehouse_id": self.warehouses["PAR"],
                        "quantity": 1, "request_id": f"restock-{R}-ghost"}, op)
        self.inv.fails(StatusCode.NOT_FOUND, "Restock",
                       {"product_id": self.products["A"], "warehouse_id": str(uuid.uuid4()),
                        "quantity": 1, "request_id": f"restock-{R}-ghost-wh"}, op)
        self.inv.fails(StatusCode.INVALID_ARGUMENT, "Restock",
                       {"product_id": self.products["A"], "warehouse_id": self.warehouses["PAR"],
                        "quantity": 0, "request_id": f"restock-{R}-zero"}, op)
        self.inv.fails(StatusCode.PERMISSION_DENIED, "Restock",
                       {"product_id": self.products["A"], "warehouse_id": self.warehouses["PAR"],
                        "quantity": 1, "request_id": f"restock-{R}-alice"}, alice)
        self.verify_stock()
        for k in "ABCDE":
            self.note(self.stock_line(self.products[k]))
        self.done()

        # ------------------------------------------------------------------ orders
        pA, pB, pC = self.prices["A"], self.prices["B"], self.prices["C"]
        potsdam, toledo = (52.39, 13.06), (39.86, -4.02)

        self.step("order 1 (Alice, delivery Potsdam): Anvil x4 + Bolt x6 -> both from Berlin")
        watched = self.order_watch.count()
        o1 = self.create_order(alice, f"o1-{R}", [("A", 4), ("B", 6)], *potsdam)
        answered_at = time.monotonic()
        eq(enum_name(o1, "status"), "ORDER_STATUS_PENDING", "order 1 status")
        _, ev = self.live(self.order_watch, watched, answered_at,
                          lambda m: m.order.id == o1.id and enum_name(m.order, "status") == "ORDER_STATUS_PENDING",
                          "order 1 PENDING after CreateOrder")
        check(ev.event_id != "", "WatchOrders message has an event_id")
        eq(enum_name(ev, "previous_status"), "ORDER_STATUS_UNSPECIFIED", "previous_status of a new order")
        eq((ev.order.customer_id, ev.order.total_cents), (self.alice_id, o1.total_cents),
           "WatchOrders carries the whole order")
        eq(o1.customer_id, self.alice_id, "order 1 customer")
        eq(o1.total_cents, 4 * pA + 6 * pB, "order 1 total_cents")
        eq(o1.currency, "USD", "order 1 currency")
        eq([i.product_name for i in o1.items], [f"Anvil {R}", f"Bolt {R}"], "order 1 product name snapshot")
        eq([i.unit_price_cents for i in o1.items], [pA, pB], "order 1 unit price snapshot")
        self.expect_routing(o1, [("A", 4, "BER"), ("B", 6, "BER")], "order 1")
        self.verify_stock()
        self.done()

        self.step("replay order 1 (same request_id): same order, stock untouched; 8 concurrent replays too")
        again = self.create_order(alice, f"o1-{R}", [("A", 4), ("B", 6)], *potsdam)
        eq(again.id, o1.id, "replayed order id")
        eq(self.lines(again), self.lines(o1), "replayed order lines")
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: self.create_order(alice, f"o1-{R}", [("A", 4), ("B", 6)], *potsdam).id,
                                range(8)))
        eq(set(ids), {o1.id}, "concurrent replays return the same order")
        self.verify_stock()
        self.done()

        self.step("order 2 (delivery Toledo): Anvil x3 -> Paris (Madrid has none, Berlin only 1 left);"
                  " Bolt x10 -> Berlin (Madrid 8 and Paris 2 too few)")
        o2 = self.create_order(alice, f"o2-{R}", [("A", 3), ("B", 10)], *toledo)
        eq(o2.total_cents, 3 * pA + 10 * pB, "order 2 total_cents")
        self.expect_routing(o2, [("A", 3, "PAR"), ("B", 10, "BER")], "order 2")
        self.verify_stock()
        self.done()

        self.step("order 3 (prefers Madrid, delivery Potsdam): Crate x2 + Bolt x5 -> Madrid (preferred can serve)")
        o3 = self.create_order(alice, f"o3-{R}", [("C", 2), ("B", 5)], *potsdam, warehouse="MAD")
        eq(o3.total_cents, 2 * pC + 5 * pB, "order 3 total_cents")
        self.expect_routing(o3, [("C", 2, "MAD"), ("B", 5, "MAD")], "order 3")
        self.verify_stock()
        self.done()

        self.step("order 4 (prefers Madrid, delivery Potsdam): Bolt x4 -> Berlin (Madrid has 3 left: nearest able)")
        o4 = self.create_order(alice, f"o4-{R}", [("B", 4)], *potsdam, warehouse="MAD")
        self.expect_routing(o4, [("B", 4, "BER")], "order 4")
        self.verify_stock()
        self.done()

        self.step("order 5 (no delivery point, no preference): Bolt x2 -> the warehouse with most available;"
                  " sent 8 times at once with one new request_id -> one order, stock moved once")
        avail = {w: self.ledger.available(self.products["B"], self.warehouses[w]) for w in ("PAR", "BER", "MAD")}
        most = max(avail, key=avail.get)
        check(sorted(avail.values())[-1] > sorted(avail.values())[-2], f"story setup: a unique maximum {avail}")
        self.note(f"Bolt available: {avail}")
        with ThreadPoolExecutor(8) as pool:
            racers = list(pool.map(lambda _: self.create_order(alice, f"o5-{R}", [("B", 2)]), range(8)))
        eq({o.id for o in racers}, {racers[0].id}, "concurrent first calls with one request_id")
        o5 = racers[0]
        self.expect_routing(o5, [("B", 2, most)], "order 5")
        self.verify_stock()
        self.done()

        self.step("order 6 (delivery 60N 0E): Echo x1 -> North (834 km), not Channel (1112 km): great-circle,"
                  " not degrees")
        o6 = self.create_order(alice, f"o6-{R}", [("E", 1)], 60.0, 0.0)
        self.expect_routing(o6, [("E", 1, "NORTH")], "order 6")
        self.verify_stock()
        self.done()

        self.step("short stock: Anvil x2 + Crate x3 (Madrid has 2 Crates) -> FAILED_PRECONDITION, nothing reserved")
        err = self.ord.fails(StatusCode.FAILED_PRECONDITION, "CreateOrder",
                             {"request_id": f"short1-{R}", "latitude": potsdam[0], "longitude": potsdam[1],
                              "items": [{"product_id": self.products["A"], "quantity": 2},
                                        {"product_id": self.products["C"], "quantity": 3}]}, alice)
        self.note(f"message: {err.details()}")
        check(self.products["C"] in err.details() or f"Crate {R}" in err.details() or f"C-{R}" in err.details(),
              f"short-stock message names the product: {err.details()!r}")
        self.verify_stock()
        # Enough Anvils in total (Paris 7 + Berlin 1), but no single warehouse can serve 8.
        err = self.ord.fails(StatusCode.FAILED_PRECONDITION, "CreateOrder",
                             {"request_id": f"short2-{R}",
                              "items": [{"product_id": self.products["A"], "quantity": 8}]}, alice)
        self.note(f"message: {err.details()}")
        self.verify_stock()
        self.done()

        self.step("invalid orders: no lines, quantity 0, 101 lines, unknown product, no token")
        one = {"product_id": self.products["B"], "quantity": 1}
        self.ord.fails(StatusCode.INVALID_ARGUMENT, "CreateOrder", {"request_id": f"bad1-{R}", "items": []}, alice)
        self.ord.fails(StatusCode.INVALID_ARGUMENT, "CreateOrder",
                       {"request_id": f"bad2-{R}", "items": [{"product_id": self.products["B"], "quantity": 0}]},
                       alice)
        self.ord.fails(StatusCode.INVALID_ARGUMENT, "CreateOrder",
                       {"request_id": f"bad3-{R}", "items": [one] * 101}, alice)
        self.ord.fails(StatusCode.NOT_FOUND, "CreateOrder",
                       {"request_id": f"bad4-{R}", "items": [one, {"product_id": str(uuid.uuid4()), "quantity": 1}]},
                       alice)
        self.ord.fails(StatusCode.UNAUTHENTICATED, "CreateOrder", {"request_id": f"bad5-{R}", "items": [one]})
        self.verify_stock()
        self.done()

        self.step("12 concurrent orders of Dynamo x1 against 5 in stock -> exactly 5 succeed, never oversold")

        def buy_dynamo(i):
            try:
                return self.create_order(alice, f"dyn-{R}-{i}", [("D", 1)])
            except grpc.RpcError as e:
                return e

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(buy_dynamo, range(12)))
        won = [r for r in results if not isinstance(r, grpc.RpcError)]
        lost = [r for r in results if isinstance(r, grpc.RpcError)]
        for e in lost:
            eq(e.code(), StatusCode.FAILED_PRECONDITION, f"losing concurrent order ({e.details()})")
        eq(len(won), 5, "concurrent Dynamo orders that succeeded")
        for o in won:
            self.expect_routing(o, [("D", 1, "PAR")], "Dynamo order")
        self.verify_stock()
        self.done()

        # ------------------------------------------------------------------ ownership
        self.step("a second customer sees none of Alice's orders; same request_id is a different order for her")
        bob_email, bob_pw = f"bob.{R}@example.com", f"bob-pw-{R}"
        bob_user = self.auth.call("Register", {"email": bob_email, "password": bob_pw, "display_name": "Bob"}).user
        bob = self.auth.call("Login", {"email": bob_email, "password": bob_pw}).access_token
        self.ord.fails(StatusCode.PERMISSION_DENIED, "GetOrder", {"id": o1.id}, bob, also=(StatusCode.NOT_FOUND,))
        self.ord.fails(StatusCode.PERMISSION_DENIED, "CancelOrder", {"id": o3.id, "reason": "mine now"}, bob,
                       also=(StatusCode.NOT_FOUND,))
        eq(len(self.ord.call("ListOrders", {}, bob).orders), 0, "Bob's orders before he orders")
        ob = self.create_order(bob, f"o1-{R}", [("B", 1)], *toledo)
        check(ob.id != o1.id, "Bob's order with Alice's request_id is a new order")
        eq(ob.customer_id, bob_user.id, "Bob's order customer")
        self.expect_routing(ob, [("B", 1, "MAD")], "Bob's order")
        # A customer cannot order on someone else's behalf.
        try:
            forged = self.create_order(bob, f"forged-{R}", [("C", 1)], *toledo, customer_id=self.alice_id)
            eq(forged.customer_id, bob_user.id, "customer_id set by a customer is ignored")
            self.expect_routing(forged, [("C", 1, "MAD")], "Bob's forged order")
            self.ord.call("CancelOrder", {"id": forged.id, "reason": "test"}, bob)
            self.ledger.release(self.products["C"], self.warehouses["MAD"], 1)
        except grpc.RpcError as e:
            eq(e.code(), StatusCode.PERMISSION_DENIED, f"customer sets customer_id ({e.details()})")
        try:
            bob_list = self.ord.call("ListOrders", {"customer_id": self.alice_id}, bob)
            check(all(o.customer_id == bob_user.id for o in bob_list.orders),
                  "a customer filtering by another customer still sees only own orders")
        except grpc.RpcError as e:
            eq(e.code(), StatusCode.PERMISSION_DENIED, f"customer filters by another customer ({e.details()})")
        self.verify_stock()
        self.done()

        self.step("operator orders for Alice (customer_id), delivery Lyon: Anvil on two lines -> two reservations")
        o7 = self.create_order(op, f"o7-{R}", [("A", 1), ("A", 1)], 45.76, 4.84, customer_id=self.alice_id)
        eq(o7.customer_id, self.alice_id, "order 7 customer")
        self.expect_routing(o7, [("A", 1, "PAR"), ("A", 1, "PAR")], "order 7")
        check(o7.items[0].reservation_id != o7.items[1].reservation_id, "each line has its own reservation")
        self.verify_stock()
        self.done()

        # ------------------------------------------------------------------ cancel / complete
        self.step("Alice cancels order 2 -> CANCELLED, stock returns; cancel is idempotent; it cannot complete")
        c = self.ord.call("CancelOrder", {"id": o2.id, "reason": "changed my mind"}, alice).order
        eq(enum_name(c, "status"), "ORDER_STATUS_CANCELLED", "order 2 status")
        eq(c.cancel_reason, "changed my mind", "order 2 cancel_reason")
        for pid, wid, q in self.lines(o2):
            self.ledger.release(pid, wid, q)
        self.verify_stock()
        c2 = self.ord.call("CancelOrder", {"id": o2.id, "reason": "again"}, alice).order
        eq(enum_name(c2, "status"), "ORDER_STATUS_CANCELLED", "order 2 status after a second cancel")
        self.ord.fails(StatusCode.FAILED_PRECONDITION, "CompleteOrder", {"id": o2.id}, op)
        self.verify_stock()
        self.done()

        self.step("Alice may not complete; operator completes order 1 -> COMPLETED, stock leaves on_hand")
        self.ord.fails(StatusCode.PERMISSION_DENIED, "CompleteOrder", {"id": o1.id}, alice)
        watched = self.order_watch.count()
        done1 = self.ord.call("CompleteOrder", {"id": o1.id}, op).order
        answered_at = time.monotonic()
        eq(enum_name(done1, "status"), "ORDER_STATUS_COMPLETED", "order 1 status")
        _, ev = self.live(self.order_watch, watched, answered_at,
                          lambda m: m.order.id == o1.id and enum_name(m.order, "status") == "ORDER_STATUS_COMPLETED",
                          "order 1 COMPLETED after CompleteOrder")
        eq(enum_name(ev, "previous_status"), "ORDER_STATUS_PENDING", "previous_status of the completed order")
        for pid, wid, q in self.lines(o1):
            self.ledger.commit(pid, wid, q)
        self.verify_stock()
        eq(enum_name(self.ord.call("CompleteOrder", {"id": o1.id}, op).order, "status"),
           "ORDER_STATUS_COMPLETED", "order 1 after a second complete")
        self.ord.fails(StatusCode.FAILED_PRECONDITION, "CancelOrder", {"id": o1.id, "reason": "too late"}, op)
        self.ord.fails(StatusCode.FAILED_PRECONDITION, "CancelOrder", {"id": o1.id, "reason": "too late"}, alice,
                       also=(StatusCode.PERMISSION_DENIED,))
        replay = self.create_order(alice, f"o1-{R}", [("A", 4), ("B", 6)], *potsdam)
        eq((replay.id, enum_name(replay, "status")), (o1.id, "ORDER_STATUS_COMPLETED"),
           "replay of a completed order")
        self.verify_stock()
        self.done()

        self.step("reservations behind the orders: committed, released, still reserved")
        for order, status in ((o1, "RESERVATION_STATUS_COMMITTED"), (o2, "RESERVATION_STATUS_RELEASED"),
                              (o3, "RESERVATION_STATUS_RESERVED")):
            for item in order.items:
                r = self.inv.call("GetReservation", {"reservation_id": item.reservation_id}, op).reservation
                eq(enum_name(r, "status"), status, f"reservation of {self.names[item.product_id]} in an order")
                eq((r.product_id, r.warehouse_id, r.quantity),
                   (item.product_id, item.warehouse_id, item.quantity), "reservation matches its order line")
        self.inv.fails(StatusCode.PERMISSION_DENIED, "GetReservation",
                       {"reservation_id": o3.items[0].reservation_id}, alice)
        self.inv.fails(StatusCode.PERMISSION_DENIED, "Reserve",
                       {"reservation_id": f"alice-{R}", "product_id": self.products["B"], "quantity": 1}, alice)
        self.done()

        self.step("the price snapshot holds: Anvil goes to $19.99, old orders keep $12.99")
        upd = self.prod.call("UpdateProduct", {"product": {"id": self.products["A"], "price_cents": 1999},
                                               "update_mask": "priceCents"}, op).product
        eq(upd.price_cents, 1999, "updated price")
        eq(upd.name, f"Anvil {R}", "update_mask leaves the name alone")
        eq(self.ord.call("GetOrder", {"id": o1.id}, alice).order.items[0].unit_price_cents, pA,
           "order 1 price after the catalog change")
        o8 = self.create_order(alice, f"o8-{R}", [("A", 1)], 45.76, 4.84)
        eq(o8.total_cents, 1999, "a new order takes the new price")
        self.expect_routing(o8, [("A", 1, "PAR")], "order 8")
        self.verify_stock()
        self.done()

        self.step("settle the Dynamo orders: complete 3, cancel 2 (operator)")
        for i, o in enumerate(won):
            if i < 3:
                r = self.ord.call("CompleteOrder", {"id": o.id}, op).order
                eq(enum_name(r, "status"), "ORDER_STATUS_COMPLETED", "Dynamo order status")
                for pid, wid, q in self.lines(o):
                    self.ledger.commit(pid, wid, q)
            else:
                r = self.ord.call("CancelOrder", {"id": o.id, "reason": "out of budget"}, op).order
                eq(enum_name(r, "status"), "ORDER_STATUS_CANCELLED", "Dynamo order status")
                for pid, wid, q in self.lines(o):
                    self.ledger.release(pid, wid, q)
        self.verify_stock()
        self.done()

        # ------------------------------------------------------------------ inventory direct
        self.step("AdjustStock: shrinkage, count correction, replay, never below reserved")
        a_par = (self.products["A"], self.warehouses["PAR"])
        on_hand, reserved = self.ledger.rows[a_par]
        self.inv.fails(StatusCode.FAILED_PRECONDITION, "AdjustStock",
                       {"product_id": a_par[0], "warehouse_id": a_par[1], "delta": -(on_hand - reserved + 1),
                        "reason": "count correction", "request_id": f"adj-{R}-too-much"}, op)
        self.verify_stock()
        for delta, reason, rid in ((-1, "shrinkage", "adj-1"), (2, "count correction", "adj-2"),
                                   (-1, "shrinkage", "adj-1")):  # the last is a replay
            self.inv.call("AdjustStock", {"product_id": a_par[0], "warehouse_id": a_par[1], "delta": delta,
                                          "reason": reason, "request_id": f"{rid}-{R}"}, op)
        self.ledger.adjust(*a_par, 1)
        self.inv.fails(StatusCode.PERMISSION_DENIED, "AdjustStock",
                       {"product_id": a_par[0], "warehouse_id": a_par[1], "delta": 5, "reason": "gift",
                        "request_id": f"adj-{R}-alice"}, alice)
        self.verify_stock()
        self.done()

        self.step("internal Reserve/Release as ADMIN: idempotent, and a released reservation cannot commit")
        rid = f"direct-{R}"
        body = {"reservation_id": rid, "product_id": self.products["C"], "quantity": 1,
                "latitude": toledo[0], "longitude": toledo[1]}
        r = self.inv.call("Reserve", body, admin).reservation
        eq(self.names.get(r.warehouse_id), "MAD", "direct reservation warehouse")
        eq(enum_name(r, "status"), "RESERVATION_STATUS_RESERVED", "direct reservation status")
        self.ledger.reserve(self.products["C"], r.warehouse_id, 1)
        eq(self.inv.call("Reserve", body, admin).reservation.reservation_id, rid, "replayed Reserve")
        self.verify_stock()
        rel = self.inv.call("ReleaseReservation", {"reservation_id": rid}, admin).reservation
        eq(enum_name(rel, "status"), "RESERVATION_STATUS_RELEASED", "released reservation")
        self.ledger.release(self.products["C"], r.warehouse_id, 1)
        self.inv.call("ReleaseReservation", {"reservation_id": rid}, admin)
        self.inv.fails(StatusCode.FAILED_PRECONDITION, "CommitReservation", {"reservation_id": rid}, admin)
        self.verify_stock()
        self.done()

        self.step("measurements: a temperature reading in Paris")
        var = self.prod.call("CreateVariable", {"name": f"temperature {R}", "unit": "°C"}, op).variable
        m = self.inv.call("RecordMeasurement", {"variable_id": var.id, "warehouse_id": self.warehouses["PAR"],
                                                "value": 4.5, "measured_at": "2026-01-02T03:04:05Z"}, op).measurement
        eq(m.value, 4.5, "measurement value")
        eq(m.measured_at.ToJsonString(), "2026-01-02T03:04:05Z", "measurement measured_at")
        listed = self.inv.call("ListMeasurements", {"variable_id": var.id}, alice).measurements
        eq([x.id for x in listed], [m.id], "ListMeasurements by variable")
        self.inv.fails(StatusCode.PERMISSION_DENIED, "RecordMeasurement",
                       {"variable_id": var.id, "warehouse_id": self.warehouses["PAR"], "value": 1}, alice)
        self.done()

        # ------------------------------------------------------------------ listing
        self.step("listing: Alice sees exactly her orders; operator filters by customer and status")
        alice_orders = {o1.id: "ORDER_STATUS_COMPLETED", o2.id: "ORDER_STATUS_CANCELLED",
                        o3.id: "ORDER_STATUS_PENDING", o4.id: "ORDER_STATUS_PENDING",
                        o5.id: "ORDER_STATUS_PENDING", o6.id: "ORDER_STATUS_PENDING",
                        o7.id: "ORDER_STATUS_PENDING", o8.id: "ORDER_STATUS_PENDING"}
        for i, o in enumerate(won):
            alice_orders[o.id] = "ORDER_STATUS_COMPLETED" if i < 3 else "ORDER_STATUS_CANCELLED"

        def walk(body, token):
            found, page_token, pages = {}, "", 0
            while True:
                page = self.ord.call("ListOrders", {**body, "page_size": 3, "page_token": page_token}, token)
                for o in page.orders:
                    check(o.id not in found, f"ListOrders returns order {o.id} twice")
                    found[o.id] = enum_name(o, "status")
                pages += 1
                page_token = page.next_page_token
                if not page_token:
                    return found
                check(pages < 100, "ListOrders pagination does not end")

        eq(walk({}, alice), alice_orders, "Alice's ListOrders")
        eq(walk({"customer_id": self.alice_id}, op), alice_orders, "operator's ListOrders for Alice")
        pending = {k: v for k, v in alice_orders.items() if v == "ORDER_STATUS_PENDING"}
        eq(walk({"customer_id": self.alice_id, "status": "ORDER_STATUS_PENDING"}, op), pending,
           "operator's ListOrders for Alice, PENDING only")
        got = self.ord.call("GetOrder", {"id": o3.id}, op).order
        eq(self.lines(got), self.lines(o3), "GetOrder lines with reserved warehouses")
        self.done()

        self.step("final ledger: every product, every warehouse")
        self.verify_stock()
        for k in "ABCDE":
            self.note(self.stock_line(self.products[k]))
        for (pid, wid), (on_hand, reserved) in sorted(self.ledger.rows.items(),
                                                      key=lambda kv: (self.names[kv[0][0]], self.names[kv[0][1]])):
            check(on_hand >= reserved >= 0, "ledger invariant")
        self.done()

        self.step("live: the streams stayed up, Alice saw only her orders, WatchStock ends at GetStock;"
                  " both cancelled cleanly")
        final = self.stock(self.products["A"])

        def same(m):
            return (m.stock.total_on_hand, m.stock.total_reserved, m.stock.total_available,
                    sorted((w.warehouse_id, w.on_hand, w.reserved) for w in m.stock.warehouses)) == \
                   (final.total_on_hand, final.total_reserved, final.total_available,
                    sorted((w.warehouse_id, w.on_hand, w.reserved) for w in final.warehouses))

        self.stock_watch.next_match(lambda m: m is self.stock_watch.messages[-1][1] and same(m),
                                    max(self.stock_watch.count() - 1, 0), 5.0, "the final Anvil stock")
        stock_msgs = [m for _, m in self.stock_watch.messages]
        check(all(m.stock.product_id == self.products["A"] for m in stock_msgs), "WatchStock only sends Anvil")
        check(all(m.event_id for m in stock_msgs[1:]), "every WatchStock message after the snapshot has an event_id")
        order_msgs = [m for _, m in self.order_watch.messages]
        others = {m.order.customer_id for m in order_msgs} - {self.alice_id}
        check(not others, f"Alice's WatchOrders shows other customers' orders: {others}")
        check({o1.id, o2.id, o3.id} <= {m.order.id for m in order_msgs}, "Alice's WatchOrders shows her orders")
        for w in (self.stock_watch, self.order_watch):
            w.cancel()
        self.note(f"WatchStock {len(stock_msgs)} messages, WatchOrders {len(order_msgs)}; cancelled -> CANCELLED")
        self.note("event arrival relative to the write's answer (limit +1000 ms): "
                  + ", ".join(f"{d * 1000:+.1f} ms" for _, d in self.delays))
        self.done()

        for s in (self.auth, self.prod, self.inv, self.ord):
            s.channel.close()


def parse_args(argv):
    def addr(svc, port):
        return (os.environ.get(f"STORY_{svc.upper()}_ADDR")
                or f"127.0.0.1:{os.environ.get(f'STOCKMESH_{svc.upper()}_PORT', port)}")

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--auth", default=addr("auth", 50051))
    ap.add_argument("--products", default=addr("products", 50052))
    ap.add_argument("--inventory", default=addr("inventory", 50053))
    ap.add_argument("--orders", default=addr("orders", 50054))
    ap.add_argument("--admin-email", default=os.environ.get("STOCKMESH_ADMIN_EMAIL", "admin@stockmesh.local"))
    ap.add_argument("--admin-password", default=os.environ.get("STOCKMESH_ADMIN_PASSWORD"))
    ap.add_argument("--wait-ready", type=float, default=0.0, metavar="SECS",
                    help="first wait up to SECS for every service's grpc.health.v1 to be SERVING")
    ap.add_argument("--ready-only", action="store_true",
                    help="only check readiness (with --wait-ready) and exit: 0 ready, 2 not")
    args = ap.parse_args(argv)
    if not args.admin_password and not args.ready_only:
        ap.error("the admin password is needed: --admin-password or STOCKMESH_ADMIN_PASSWORD")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    services = {"auth": "stockmesh.auth.v1.AuthService", "products": "stockmesh.products.v1.ProductService",
                "inventory": "stockmesh.inventory.v1.InventoryService", "orders": "stockmesh.orders.v1.OrderService"}
    addresses = {"auth": args.auth, "products": args.products, "inventory": args.inventory, "orders": args.orders}
    story = Story(args)
    if not args.ready_only:
        print(f"stockmesh story, run {story.run}: auth {args.auth}, products {args.products}, "
              f"inventory {args.inventory}, orders {args.orders}", flush=True)
    try:
        if args.wait_ready > 0 or args.ready_only:
            wait_ready(addresses, services, args.wait_ready)
            if args.ready_only:
                return 0
        try:
            story.run_story()
        finally:
            story.close_watches()
    except StoryFailure as e:
        print(f"FAILED at step {story.step_no}: {e}", flush=True)
        return 1
    except grpc.RpcError as e:
        print(f"FAILED at step {story.step_no}: unexpected {e.code().name}: {e.details()}", flush=True)
        traceback.print_exc()
        return 1
    except ConnectionError as e:
        print(f"cannot reach the mesh: {e}", flush=True)
        return 2
    except Exception:  # a bug in the story or a malformed answer: still a failed step
        print(f"FAILED at step {story.step_no}: unexpected error", flush=True)
        traceback.print_exc()
        return 1
    elapsed = time.monotonic() - story.started
    print(f"story passed: {story.step_no} steps in {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
