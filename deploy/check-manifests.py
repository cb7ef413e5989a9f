"""Consistency checks of deploy/k8s that no schema or linter makes (run by deploy/validate.sh).

    python deploy/check-manifests.py deploy/k8s VARIANT=RENDERED.yaml ...

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
   - a default-deny NetworkPolicy exists and every pod is selected by an ingress policy.
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


def main() -> int:
    root = Path(sys.argv[1])
    check_listing(root)
    for arg in sys.argv[2:]:
        name, rendered = arg.split("=", 1)
        check_variant(name, Path(rendered))
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    if not errors:
        print(f"manifest checks: {len(sys.argv) - 2} variants consistent, every file listed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
