"""Consistency checks of deploy/k8s that no schema or linter makes (run by deploy/validate.sh).

    python deploy/check-manifests.py deploy/k8s VARIANT=RENDERED.yaml ... [--monitors RENDERED.yaml]
        [--mtls MTLS.yaml CERT-MANAGER.yaml]

1. Every YAML file under deploy/k8s is listed by the kustomization.yaml of its directory,
   and every listed entry exists: nothing is written and then silently never applied.
2. In each rendered variant (`kubectl kustomize` output):
   - every STOCKMESH_<SVC>_ADDRS is dns:///<svc>-headless.<namespace>.svc.cluster.local:<port>
     and names a headless Service (clusterIP None, not publishing unready pods) with that
     port, selecting the Deployment that serves it;
   - every Deployment has a PodDisruptionBudget and an autoscaling/v2 HPA, rolls with
     maxUnavailable 0 / maxSurge 1, and gives itself terminationGracePeriodSeconds greater
     than its preStop sleep + STOCKMESH_DRAIN_DELAY_MS + STOCKMESH_SHUTDOWN_GRACE_MS;
   - every pod mounts no service account token and every container has CPU and memory
     requests and limits, runs as non-root with a read-only root and drops ALL capabilities;
   - the services probe with gRPC (startup, readiness, liveness), the gateway with /readyz
     and /healthz;
   - a default-deny NetworkPolicy exists and every pod is selected by an ingress policy;
   - every Deployment's pods carry prometheus.io/scrape "true", /path /metrics and /port: a
     service's container port `metrics`, equal to its STOCKMESH_<SVC>_METRICS_PORT in the
     ConfigMap; the gateway's port `http` (8080); and a NetworkPolicy lets the namespace
     `monitoring` (or anyone) reach that port.
3. With --monitors (`kubectl kustomize deploy/k8s/monitoring`, checked against the first
   variant): the PodMonitors, which no offline schema covers, use only known fields, select
   pods of that namespace whose container port of that name is their prometheus.io/port,
   scrape /metrics, and together cover every Deployment that asks to be scraped.
4. With --mtls (`kubectl kustomize deploy/k8s/mtls` and deploy/k8s/mtls/cert-manager): the
   ConfigMap sets STOCKMESH_TLS_DIR; every Deployment mounts its identity's Secret
   `<identity>-tls` there in the layout the services read (ca.crt, <identity>/tls.crt,
   <identity>/tls.key), not through subPath (which never updates); every service probes
   its STOCKMESH_<SVC>_HEALTH_PORT, a container port of its own; and cert-manager issues
   each of those Secrets with the URI SAN spiffe://stockmesh/<identity>, for server and
   client auth.
Exits 1 listing every failure.
"""

import re
import sys
from pathlib import Path

import yaml

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)


def check_listing(root: Path) -> None:
    kustomizations = {p.parent: p for p in root.rglob("kustomization.yaml")}
    for path in sorted(root.rglob("*.y*ml")):
        if path.name == "kustomization.yaml":
            continue
        kust = kustomizations.get(path.parent)
        if kust is None:
            fail(f"{path}: no kustomization.yaml in {path.parent}")
            continue
        listed = yaml.safe_load(kust.read_text()).get("resources") or []
        if path.name not in listed:
            fail(f"{path}: not listed in {kust} resources")
    for directory, kust in sorted(kustomizations.items()):
        for entry in yaml.safe_load(kust.read_text()).get("resources") or []:
            target = (directory / entry).resolve()
            if not (target.is_file() or (target / "kustomization.yaml").is_file()):
                fail(f"{kust}: resource {entry} does not exist")


def selects(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        have = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and have not in expr["values"]:
            return False
        if op == "NotIn" and have in expr["values"]:
            return False
        if op == "Exists" and have is None:
            return False
        if op == "DoesNotExist" and have is not None:
            return False
    return True


def prestop_seconds(container: dict) -> int:
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = (pre.get("exec") or {}).get("command") or []
    if len(cmd) == 2 and cmd[0] == "sleep":
        return int(cmd[1])
    return 0


MONITORING_NAMESPACE = "monitoring"


def allows_from_monitoring(policy: dict, port: int) -> bool:
    """Whether an ingress NetworkPolicy lets pods of the namespace `monitoring` reach TCP `port`."""
    for rule in policy["spec"].get("ingress") or []:
        ports = rule.get("ports")
        if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports):
            continue
        peers = rule.get("from")
        if not peers:
            return True
        for peer in peers:
            ns = peer.get("namespaceSelector")
            if ns is not None and selects(ns, {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}):
                return True
    return False


def check_scraping(name: str, deployments: dict, settings: dict, policies: list[dict]) -> None:
    for dname, d in sorted(deployments.items()):
        where = f"{name}: Deployment {dname}"
        pod = d["spec"]["template"]
        labels = pod["metadata"]["labels"]
        annotations = pod["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" or \
                annotations.get("prometheus.io/path") != "/metrics":
            fail(f"{where}: pods need prometheus.io/scrape \"true\" and prometheus.io/path /metrics")
            continue
        ports = {p.get("name"): p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        component = labels.get("app.kubernetes.io/component")
        port_name = "metrics" if component == "service" else "http"
        port = ports.get(port_name)
        if str(port) != annotations.get("prometheus.io/port"):
            fail(f"{where}: prometheus.io/port {annotations.get('prometheus.io/port')} is not its "
                 f"container port `{port_name}` ({port})")
            continue
        if component == "service":
            key = f"STOCKMESH_{dname.upper()}_METRICS_PORT"
            if settings.get(key) != str(port):
                fail(f"{where}: ConfigMap {key}={settings.get(key)} is not its `metrics` port {port}")
        if not any(selects(p["spec"]["podSelector"], labels) and allows_from_monitoring(p, port) for p in policies):
            fail(f"{where}: no NetworkPolicy lets the namespace {MONITORING_NAMESPACE} reach port {port}")


# The fields of monitoring.coreos.com/v1 PodMonitor these manifests may use (no schema of the
# CRD is available offline; a misspelt field would be dropped by the API server unnoticed).
PODMONITOR_SPEC = {"jobLabel", "podTargetLabels", "selector", "namespaceSelector", "podMetricsEndpoints",
                   "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
                   "attachMetadata", "scrapeProtocols", "scrapeClass"}
PODMONITOR_ENDPOINT = {"port", "portNumber", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                       "honorTimestamps", "relabelings", "metricRelabelings", "params", "filterRunning",
                       "enableHttp2", "followRedirects", "proxyUrl", "tlsConfig", "authorization", "basicAuth"}


def check_monitors(rendered: Path, variant: Path) -> None:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    deployments = [d for d in yaml.safe_load_all(variant.read_text()) if d and d["kind"] == "Deployment"]
    covered: set[str] = set()
    for m in docs:
        where = f"{rendered.name}: {m['kind']} {m['metadata']['name']}"
        if m["kind"] != "PodMonitor" or m.get("apiVersion") != "monitoring.coreos.com/v1":
            fail(f"{where}: only monitoring.coreos.com/v1 PodMonitors belong here")
            continue
        spec = m.get("spec") or {}
        if set(spec) - PODMONITOR_SPEC:
            fail(f"{where}: unknown spec fields {sorted(set(spec) - PODMONITOR_SPEC)}")
        namespace = m["metadata"].get("namespace")
        names = (spec.get("namespaceSelector") or {}).get("matchNames") or [namespace]
        selected = [d for d in deployments if d["metadata"].get("namespace") in names
                    and selects(spec.get("selector") or {}, d["spec"]["template"]["metadata"]["labels"])]
        if not selected:
            fail(f"{where}: selects no Deployment's pods")
        endpoints = spec.get("podMetricsEndpoints") or []
        if not endpoints:
            fail(f"{where}: no podMetricsEndpoints")
        for e in endpoints:
            if set(e) - PODMONITOR_ENDPOINT:
                fail(f"{where}: unknown podMetricsEndpoints fields {sorted(set(e) - PODMONITOR_ENDPOINT)}")
            if e.get("path", "/metrics") != "/metrics":
                fail(f"{where}: must scrape /metrics")
            for d in selected:
                pod = d["spec"]["template"]
                ports = {p.get("name"): p["containerPort"] for c in pod["spec"]["containers"]
                         for p in c.get("ports", [])}
                annotated = (pod["metadata"].get("annotations") or {}).get("prometheus.io/port")
                if e.get("port") not in ports or str(ports[e["port"]]) != annotated:
                    fail(f"{where}: port {e.get('port')} is not Deployment {d['metadata']['name']}'s "
                         f"metrics port ({annotated})")
                else:
                    covered.add(d["metadata"]["name"])
    for d in deployments:
        annotations = d["spec"]["template"]["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/scrape") == "true" and d["metadata"]["name"] not in covered:
            fail(f"{rendered.name}: no PodMonitor scrapes Deployment {d['metadata']['name']}")


def check_variant(name: str, rendered: Path) -> None:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}
    settings = configmaps.get("stockmesh")
    if settings is None:
        fail(f"{name}: no ConfigMap stockmesh")
        return
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])

    # In-mesh addresses name headless Services that select the right pods.
    for key, value in sorted(settings.items()):
        m = re.fullmatch(r"STOCKMESH_([A-Z]+)_ADDRS", key)
        if not m:
            continue
        svc = m.group(1).lower()
        am = re.fullmatch(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", value)
        if not am or am.group(1) != f"{svc}-headless":
            fail(f"{name}: {key}={value} is not dns:///{svc}-headless.<namespace>.svc.cluster.local:<port>")
            continue
        host, namespace, port = am.group(1), am.group(2), int(am.group(3))
        service = services.get(host)
        if service is None or service["metadata"].get("namespace") != namespace:
            fail(f"{name}: {key} names {host}.{namespace}, which is not a Service here")
            continue
        spec = service["spec"]
        if spec.get("clusterIP") != "None" or spec.get("publishNotReadyAddresses", False):
            fail(f"{name}: Service {host} must be headless and must not publish unready pods")
        if port not in [p["port"] for p in spec.get("ports", [])]:
            fail(f"{name}: Service {host} has no port {port}")
        deployment = deployments.get(svc)
        if deployment is None or not selects({"matchLabels": spec["selector"]},
                                             deployment["spec"]["template"]["metadata"]["labels"]):
            fail(f"{name}: Service {host} does not select the {svc} Deployment")
        elif port not in [p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"]
                          for p in c.get("ports", [])]:
            fail(f"{name}: the {svc} Deployment does not listen on {port}")

    drain = int(settings.get("STOCKMESH_DRAIN_DELAY_MS", 2000)) / 1000
    grace = int(settings.get("STOCKMESH_SHUTDOWN_GRACE_MS", 10000)) / 1000
    pdbs = by_kind.get("PodDisruptionBudget", [])
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    for dname, d in sorted(deployments.items()):
        where = f"{name}: Deployment {dname}"
        pod = d["spec"]["template"]
        labels = pod["metadata"]["labels"]
        if not any(selects(p["spec"]["selector"], labels) for p in pdbs):
            fail(f"{where} has no PodDisruptionBudget")
        if not any(h["apiVersion"] == "autoscaling/v2" and h["spec"]["scaleTargetRef"]["name"] == dname
                   for h in hpas):
            fail(f"{where} has no autoscaling/v2 HorizontalPodAutoscaler")
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        if rolling.get("maxUnavailable") != 0 or rolling.get("maxSurge") != 1:
            fail(f"{where} must roll with maxUnavailable 0, maxSurge 1")
        spec = pod["spec"]
        tgps = spec.get("terminationGracePeriodSeconds", 30)
        for c in spec["containers"]:
            need = prestop_seconds(c) + drain + grace
            if tgps <= need:
                fail(f"{where}: terminationGracePeriodSeconds {tgps} <= preStop + drain + grace = {need:g}")
            probes = (c.get("startupProbe"), c.get("readinessProbe"), c.get("livenessProbe"))
            if labels.get("app.kubernetes.io/component") == "service":
                if not all(p and "grpc" in p for p in probes):
                    fail(f"{where}: needs gRPC startup, readiness and liveness probes")
            elif dname == "gateway":
                ready, live = probes[1] or {}, probes[2] or {}
                if (ready.get("httpGet") or {}).get("path") != "/readyz" or \
                        (live.get("httpGet") or {}).get("path") != "/healthz":
                    fail(f"{where}: needs /readyz readiness and /healthz liveness probes")

    ingress_policies = [p for p in by_kind.get("NetworkPolicy", []) if p["spec"].get("ingress")]
    check_scraping(name, deployments, settings, ingress_policies)
    if not any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")
               and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               for p in by_kind.get("NetworkPolicy", [])):
        fail(f"{name}: no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    for w in workloads:
        where = f"{name}: {w['kind']} {w['metadata']['name']}"
        pod = w["spec"]["template"]
        spec = pod["spec"]
        if spec.get("automountServiceAccountToken") is not False:
            fail(f"{where}: automountServiceAccountToken must be false")
        if not any(selects(p["spec"]["podSelector"], pod["metadata"]["labels"]) for p in ingress_policies):
            fail(f"{where}: no NetworkPolicy lets anything in")
        if (spec.get("securityContext") or {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(f"{where}: pod seccompProfile must be RuntimeDefault")
        for c in spec["containers"]:
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        fail(f"{where}: container {c['name']} has no {r} {kind[:-1]}")
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
                    and sc.get("allowPrivilegeEscalation") is False
                    and (sc.get("capabilities") or {}).get("drop") == ["ALL"]):
                fail(f"{where}: container {c['name']} must run as non-root, read-only, "
                     "without privilege escalation, dropping ALL capabilities")
            image = c["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                fail(f"{where}: image {image} must have a pinned tag (not latest)")


def check_mtls(rendered: Path, certs: Path) -> None:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    settings = next((d.get("data") or {} for d in docs
                     if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "stockmesh"), {})
    tls_dir = settings.get("STOCKMESH_TLS_DIR")
    if not tls_dir:
        fail("mtls: the ConfigMap sets no STOCKMESH_TLS_DIR")
        return
    identities = []
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        name = d["metadata"]["name"]
        identities.append(name)
        where = f"mtls: Deployment {name}"
        spec = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        want = {"ca.crt": "ca.crt", "tls.crt": f"{name}/tls.crt", "tls.key": f"{name}/tls.key"}
        mounted = False
        for c in spec["containers"]:
            for m in c.get("volumeMounts") or []:
                if m.get("mountPath") != tls_dir:
                    continue
                if m.get("subPath"):
                    fail(f"{where}: the TLS directory is mounted with subPath (never updated)")
                sources = (volumes.get(m["name"], {}).get("projected") or {}).get("sources") or []
                items = {i["key"]: i["path"] for src in sources if (src.get("secret") or {}).get("name") == f"{name}-tls"
                         for i in src["secret"].get("items") or []}
                mounted = items == want
            if labels_component(d) == "service":
                port = settings.get(f"STOCKMESH_{name.upper()}_HEALTH_PORT")
                ports = [p["containerPort"] for p in c.get("ports") or []]
                if port is None or int(port) not in ports:
                    fail(f"{where}: STOCKMESH_{name.upper()}_HEALTH_PORT is not one of its container ports")
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    grpc = (c.get(probe) or {}).get("grpc") or {}
                    if port is None or grpc.get("port") != int(port):
                        fail(f"{where}: {probe} must be gRPC on the plaintext health port {port}")
        if not mounted:
            fail(f"{where}: does not mount Secret {name}-tls at {tls_dir} as {want}")
    issued = {}
    for d in yaml.safe_load_all(certs.read_text()):
        if d and d["kind"] == "Certificate" and not d["spec"].get("isCA"):
            issued[d["spec"]["secretName"]] = d["spec"]
    for name in identities:
        spec = issued.get(f"{name}-tls")
        if spec is None:
            fail(f"mtls/cert-manager: no Certificate for Secret {name}-tls")
            continue
        if spec.get("uris") != [f"spiffe://stockmesh/{name}"]:
            fail(f"mtls/cert-manager: {name}-tls must carry the URI SAN spiffe://stockmesh/{name}")
        if not {"server auth", "client auth"} <= set(spec.get("usages") or []):
            fail(f"mtls/cert-manager: {name}-tls needs the usages server auth and client auth")


def labels_component(deployment: dict) -> str:
    return deployment["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component", "")


def main() -> int:
    root = Path(sys.argv[1])
    args = sys.argv[2:]
    monitors = None
    if "--monitors" in args:
        i = args.index("--monitors")
        monitors = Path(args[i + 1])
        del args[i:i + 2]
    mtls = None
    if "--mtls" in args:
        i = args.index("--mtls")
        mtls = (Path(args[i + 1]), Path(args[i + 2]))
        del args[i:i + 3]
    check_listing(root)
    variants = [Path(arg.split("=", 1)[1]) for arg in args]
    for arg in args:
        name, rendered = arg.split("=", 1)
        check_variant(name, Path(rendered))
    if monitors is not None:
        check_monitors(monitors, variants[0])
    if mtls is not None:
        check_mtls(*mtls)
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    if not errors:
        print(f"manifest checks: {len(args)} variants consistent"
              f"{', the PodMonitors cover every scraped Deployment' if monitors else ''}"
              f"{', mTLS mounts, health probes and certificates agree' if mtls else ''}, every file listed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
