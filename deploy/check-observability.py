"""Checks of the observability files in deploy/ (run by deploy/validate.sh).

    python deploy/check-observability.py COMPOSE_DEFAULT.json COMPOSE_OBSERVABILITY.json

The two arguments are `docker compose config --format json` of deploy/docker-compose.yml
without and with `--profile observability`.

1. Every Grafana dashboard in deploy/grafana/dashboards/ is JSON with a uid, unique panel
   ids and a gridPos per panel; every panel but a row has targets, each with a non-empty
   `expr`, and uses the `${datasource}` variable, whose default is the provisioned uid.
2. Every PromQL expression (panel targets and query variables) uses only the series the
   processes export (METRICS below), only their labels (in matchers, `by (…)`, legends),
   only known values of the enumerated labels, rate()/increase() only on counters and
   histogram series, and histogram_quantile() only over `_bucket` grouped by `le`.
3. deploy/prometheus/prometheus.yml scrapes every stockmesh target of the Compose file on
   its metrics port (the container's STOCKMESH_<SVC>_METRICS_PORT; the gateway's 8080)
   every 5 s, and is what the `prometheus` service mounts.
4. Grafana's provisioning: the datasource with that uid points at the `prometheus`
   service, and the dashboard provider reads the directory the `grafana` service mounts
   deploy/grafana/dashboards at.
5. Compose: the `prometheus` and `grafana` services exist only under the profile
   `observability` (a plain `up` is unchanged), have pinned image tags, and every file or
   directory they bind-mount exists.
Exits 1 listing every failure.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent

# Every series the processes export: type and labels. The README's Observability section
# documents them; a dashboard query naming anything else shows nothing.
METRICS: dict[str, tuple[str, set[str]]] = {
    # server side, every gRPC server
    "grpc_server_started_total": ("counter", {"grpc_service", "grpc_method"}),
    "grpc_server_handled_total": ("counter", {"grpc_service", "grpc_method", "grpc_code"}),
    "grpc_server_handling_seconds": ("histogram", {"grpc_service", "grpc_method"}),
    "grpc_server_in_flight": ("gauge", {"grpc_service"}),
    # client side, each caller per upstream
    "stockmesh_upstream_requests_total": ("counter", {"caller", "upstream", "grpc_code"}),
    "stockmesh_upstream_request_duration_seconds": ("histogram", {"caller", "upstream"}),
    "stockmesh_upstream_attempts_total": ("counter", {"caller", "upstream", "endpoint", "outcome"}),
    "stockmesh_upstream_retries_total": ("counter", {"caller", "upstream"}),
    "stockmesh_upstream_retry_budget_exhausted_total": ("counter", {"caller", "upstream"}),
    "stockmesh_upstream_breaker_state": ("gauge", {"caller", "upstream", "endpoint"}),
    "stockmesh_upstream_breaker_transitions_total": ("counter", {"caller", "upstream", "endpoint", "to"}),
    "stockmesh_upstream_breaker_rejected_total": ("counter", {"caller", "upstream"}),
    "stockmesh_upstream_shed_total": ("counter", {"caller", "upstream"}),
    "stockmesh_upstream_endpoint_ready": ("gauge", {"caller", "upstream", "endpoint"}),
    # resources and domain
    "stockmesh_db_pool_connections": ("gauge", {"service", "state"}),
    "stockmesh_db_pool_acquire_seconds": ("histogram", {"service"}),
    "stockmesh_orders_saga_total": ("counter", {"outcome"}),
    "stockmesh_orders_saga_compensations_total": ("counter", {"result"}),
    "stockmesh_auth_tokens_issued_total": ("counter", {"kind"}),
    "stockmesh_auth_tokens_refused_total": ("counter", {"kind", "reason"}),
    "stockmesh_orders_reconciled_total": ("counter", {"work", "outcome"}),
    "stockmesh_inventory_reservations_expired_total": ("counter", set()),
    # gateway
    "gateway_requests_total": ("counter", {"protocol", "route", "status"}),
    "gateway_request_duration_seconds": ("histogram", {"protocol", "route", "status"}),
}
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
# The values an `=` / `!=` matcher may compare an enumerated label with.
LABEL_VALUES: dict[str, set[str]] = {
    "grpc_code": {"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
                  "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
                  "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
                  "Unauthenticated"},
    "state": {"in_use", "idle", "max"},
    "outcome": {"success", "failure", "neutral",  # stockmesh_upstream_attempts_total
                "ended", "unchanged", "failed", "skipped"},  # stockmesh_orders_reconciled_total
    "to": {"closed", "half_open", "open"},
    "kind": {"login", "refresh", "service"},
    "work": {"unfinished", "expiry"},
    "reason": {"invalid_credentials", "throttled", "service_identity_on_login", "service_proof_refused",
               "invalid_refresh_token", "refresh_token_reused", "invalid_request", "unknown_subject"},
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
FUNCTIONS = {"rate", "irate", "increase", "sum", "min", "max", "avg", "count", "topk", "bottomk",
             "histogram_quantile", "clamp_min", "clamp_max", "abs", "vector", "scalar", "label_values",
             "max_over_time", "min_over_time", "avg_over_time", "changes", "resets", "delta", "deriv"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "bool", "offset"}
# The stockmesh targets of the Compose file and the port each serves /metrics on.
TARGETS = {"auth": "STOCKMESH_AUTH_METRICS_PORT", "products": "STOCKMESH_PRODUCTS_METRICS_PORT",
           "inventory": "STOCKMESH_INVENTORY_METRICS_PORT", "orders": "STOCKMESH_ORDERS_METRICS_PORT",
           "gateway": "STOCKMESH_GATEWAY_PORT"}
DEFAULT_PORTS = {"STOCKMESH_AUTH_METRICS_PORT": 9101, "STOCKMESH_PRODUCTS_METRICS_PORT": 9102,
                 "STOCKMESH_INVENTORY_METRICS_PORT": 9103, "STOCKMESH_ORDERS_METRICS_PORT": 9104,
                 "STOCKMESH_GATEWAY_PORT": 8080}
OBSERVABILITY = {"prometheus", "grafana"}

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)


def series_type(name: str) -> str | None:
    """The type of a series name: counter, gauge, histogram, or the `_bucket`/`_sum`/`_count`
    of a histogram (bucket / counter); None when the processes export no such series."""
    if name in METRICS:
        return METRICS[name][0]
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("",))[0] == "histogram":
            return "bucket" if suffix == "_bucket" else "counter"
    return None


def series_labels(name: str) -> set[str]:
    for suffix in ("",) + HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix) if suffix else name
        if base in METRICS:
            return METRICS[base][1] | ({"le"} if suffix == "_bucket" else set())
    return set()


def check_expr(where: str, expr: str, legend: str = "") -> None:
    """Checks one PromQL expression (a deliberately small parser: the dashboard's queries are
    simple aggregations, and anything it cannot read is reported, not waved through)."""
    # Label matchers: {name op "value", …}
    matchers: list[tuple[str, str, str]] = []
    for block in re.findall(r"\{([^{}]*)\}", expr):
        for part in filter(None, (p.strip() for p in block.split(","))):
            m = re.fullmatch(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"', part)
            if not m:
                fail(f"{where}: cannot read the label matcher {part!r}")
                continue
            matchers.append((m.group(1), m.group(2), m.group(3)))
    rest = re.sub(r"\{[^{}]*\}", " ", expr)
    rest = re.sub(r'"[^"]*"', " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    grouping: list[str] = []
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", rest):
        grouping += [label.strip() for label in m.group(2).split(",") if label.strip()]
    rest = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    names: list[str] = []
    for m in re.finditer(r"[A-Za-z_:][\w:]*", rest):
        word = m.group(0)
        before = rest[:m.start()]
        if before and (before[-1].isdigit() or before[-1] == "."):
            continue  # the exponent or tail of a number
        if re.match(r"\s*\(", rest[m.end():]):
            if word not in FUNCTIONS:
                fail(f"{where}: unknown function {word}()")
        elif word not in KEYWORDS:
            names.append(word)
    if not names:
        fail(f"{where}: names no series: {expr}")
    labels: set[str] = set(TARGET_LABELS)
    for name in names:
        if series_type(name) is None:
            fail(f"{where}: {name} is not a series the processes export")
        labels |= series_labels(name)
    for label, op, value in matchers:
        if label not in labels:
            fail(f"{where}: label {label} is not one of {', '.join(names)}'s")
        if op in ("=", "!=") and label in LABEL_VALUES and value not in LABEL_VALUES[label]:
            fail(f"{where}: {label}{op}\"{value}\" can never match (values: {sorted(LABEL_VALUES[label])})")
    for label in grouping:
        if label not in labels:
            fail(f"{where}: groups by {label}, which is not a label of {', '.join(names)}")
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
        if label not in labels:
            fail(f"{where}: legend uses {label}, which is not a label of {', '.join(names)}")
    for m in re.finditer(r"\b(rate|irate|increase)\s*\(\s*([A-Za-z_:][\w:]*)", expr):
        if series_type(m.group(2)) not in ("counter", "bucket"):
            fail(f"{where}: {m.group(1)}() of {m.group(2)}, which is not a counter")
    for name in names:
        if series_type(name) == "bucket" and "histogram_quantile" not in expr:
            fail(f"{where}: {name} outside histogram_quantile()")
    if "histogram_quantile" in expr:
        if not any(series_type(n) == "bucket" for n in names) or "le" not in grouping:
            fail(f"{where}: histogram_quantile() needs a _bucket series aggregated `by (…, le)`")


def check_dashboard(path: Path, datasource_uids: set[str]) -> int:
    try:
        dash = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        fail(f"{path}: not JSON: {e}")
        return 0
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dash:
            fail(f"{path}: no {key}")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail(f"{path}: needs a `datasource` variable of type datasource (prometheus)")
    elif (ds.get("current") or {}).get("value") not in datasource_uids:
        fail(f"{path}: the datasource variable's default {ds.get('current')} is not a provisioned uid "
             f"({sorted(datasource_uids)})")
    for name, var in variables.items():
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", query)
        if not m:
            fail(f"{path}: variable {name}: query {query!r} is not label_values(series, label)")
            continue
        check_expr(f"{path}: variable {name}", m.group(1))
        if m.group(2) not in series_labels(re.sub(r"\{.*\}", "", m.group(1)).strip()):
            fail(f"{path}: variable {name}: {m.group(2)} is not a label of {m.group(1)}")
    panels = list(dash.get("panels") or [])
    for p in list(panels):
        panels += p.get("panels") or []  # the panels of collapsed rows
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)) or None in ids:
        fail(f"{path}: panel ids must be present and unique")
    for p in panels:
        where = f"{path}: panel {p.get('id')} {p.get('title')!r}"
        if not {"h", "w", "x", "y"} <= set(p.get("gridPos") or {}):
            fail(f"{where}: no gridPos")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            fail(f"{where}: datasource must be the ${{datasource}} variable")
        targets = p.get("targets") or []
        if not targets:
            fail(f"{where}: no targets")
        if len({t.get("refId") for t in targets}) != len(targets):
            fail(f"{where}: refIds must be unique")
        for t in targets:
            expr = (t.get("expr") or "").strip()
            if not expr:
                fail(f"{where}: target {t.get('refId')} has no expr")
                continue
            check_expr(f"{where} {t.get('refId')}", expr, t.get("legendFormat") or "")
    return len(panels)


def port_of(service: dict, variable: str) -> int:
    value = (service.get("environment") or {}).get(variable)
    return int(value) if value else DEFAULT_PORTS[variable]


def binds(service: dict) -> dict[str, Path]:
    """A service's bind mounts: target path in the container -> source path on the host."""
    return {v["target"]: Path(v["source"]) for v in service.get("volumes") or [] if v.get("type") == "bind"}


def main() -> int:
    default = json.loads(Path(sys.argv[1]).read_text())["services"]
    full = json.loads(Path(sys.argv[2]).read_text())["services"]

    # 5. Compose: the profile, pinned images, mounts that exist.
    if OBSERVABILITY & set(default):
        fail(f"compose: {sorted(OBSERVABILITY & set(default))} start without --profile observability")
    if set(full) != set(default) | OBSERVABILITY:
        fail(f"compose: --profile observability should add exactly {sorted(OBSERVABILITY)}, "
             f"adds {sorted(set(full) - set(default))}")
    for name in sorted(OBSERVABILITY & set(full)):
        service = full[name]
        if service.get("profiles") != ["observability"]:
            fail(f"compose: {name} must have profiles: [observability]")
        image = service.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            fail(f"compose: {name} image {image} must have a pinned tag (not latest)")
        for target, source in binds(service).items():
            if not source.exists():
                fail(f"compose: {name} mounts {source} at {target}, which does not exist")
    for name in TARGETS:
        if name not in default:
            fail(f"compose: no service {name}")
    if errors:
        return report(0)
    prometheus, grafana = full["prometheus"], full["grafana"]

    # 3. Prometheus scrapes every target on its metrics port.
    prom_path = DEPLOY / "prometheus" / "prometheus.yml"
    if binds(prometheus).get("/etc/prometheus/prometheus.yml") != prom_path:
        fail(f"compose: prometheus must mount {prom_path} at /etc/prometheus/prometheus.yml")
    prom = yaml.safe_load(prom_path.read_text())
    if (prom.get("global") or {}).get("scrape_interval") != "5s":
        fail(f"{prom_path}: global scrape_interval must be 5s")
    jobs = {j.get("job_name"): j for j in prom.get("scrape_configs") or []}
    for name, variable in TARGETS.items():
        job = jobs.get(name)
        if job is None:
            fail(f"{prom_path}: no job {name}")
            continue
        port = port_of(default[name], variable)
        found = [(n, int(d.get("port", 0))) for d in job.get("dns_sd_configs") or [] for n in d.get("names", [])]
        found += [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1]))
                  for s in job.get("static_configs") or [] for t in s.get("targets", [])]
        if found != [(name, port)]:
            fail(f"{prom_path}: job {name} must scrape {name}:{port} (only), scrapes {found}")
        if job.get("metrics_path", "/metrics") != "/metrics":
            fail(f"{prom_path}: job {name} must scrape /metrics")
    if set(jobs) - set(TARGETS):
        fail(f"{prom_path}: jobs {sorted(set(jobs) - set(TARGETS))} scrape no stockmesh target")

    # 4. Grafana's provisioning agrees with Compose and the dashboards.
    grafana_binds = binds(grafana)
    provisioning = DEPLOY / "grafana" / "provisioning"
    if grafana_binds.get("/etc/grafana/provisioning") != provisioning:
        fail(f"compose: grafana must mount {provisioning} at /etc/grafana/provisioning")
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uids = set()
    for ds in sources.get("datasources") or []:
        if ds.get("type") == "prometheus":
            uids.add(ds.get("uid"))
            prom_port = 9090
            if ds.get("url") != f"http://prometheus:{prom_port}":
                fail(f"{provisioning}/datasources/prometheus.yml: url must be http://prometheus:{prom_port}")
    if not uids:
        fail(f"{provisioning}/datasources/prometheus.yml: no prometheus datasource")
    dashboards_dir = DEPLOY / "grafana" / "dashboards"
    providers = yaml.safe_load((provisioning / "dashboards" / "stockmesh.yml").read_text())
    for provider in providers.get("providers") or []:
        path = (provider.get("options") or {}).get("path")
        if grafana_binds.get(path) != dashboards_dir:
            fail(f"{provisioning}/dashboards/stockmesh.yml: provider {provider.get('name')} reads {path}, "
                 f"where compose does not mount {dashboards_dir}")

    # 1, 2. The dashboards.
    dashboards = sorted(dashboards_dir.glob("*.json"))
    if not dashboards:
        fail(f"{dashboards_dir}: no dashboard")
    panels = sum(check_dashboard(p, uids) for p in dashboards)
    return report(panels)


def report(panels: int) -> int:
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    if not errors:
        print(f"observability checks: {panels} dashboard panels query only exported series; "
              "Prometheus, Grafana and Compose agree")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
