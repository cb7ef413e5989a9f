#!/usr/bin/env bash
# Runs schemathesis (PyPI, pinned in requirements.txt) against a freshly started mesh:
#
#   1. a venv with requirements.txt (target/schemathesis-venv, reused while the
#      requirements are unchanged; ST_VENV=<dir> puts it elsewhere),
#   2. `stockmesh up` from an already-built binary ($1, default target/debug/stockmesh)
#      on free ports, with a temp data dir, a random admin password and the gateway's rate
#      limit off (schemathesis sends hundreds of requests a second from one address),
#   3. waits for /readyz (bounded), signs in as the admin,
#   4. runs every phase (examples, coverage, fuzzing, stateful over the document's
#      links) in positive and negative mode with every check, except those
#      schemathesis.toml disables (each with its reason there), bounded by
#      ST_MAX_EXAMPLES (default 50) examples per operation and a fixed seed (ST_SEED), so a
#      run is reproducible and takes well under a minute on 2 cores. Strings are ASCII
#      (ST_CODEC=utf-8 for any text): some services bound keys in bytes (e.g. request ids,
#      200 bytes) where JSON Schema counts characters, and for ASCII the two agree.
#      Server streams are left out and page tokens fixed (schemathesis.toml says why).
#   5. stops the mesh by its pid with SIGINT.
#
# Exit status: schemathesis' (non-zero when it found a failure), or 3 when the mesh did
# not start, become ready or let the admin sign in.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/stockmesh}"
[[ "$bin" = /* ]] || bin="$PWD/$bin"
[ -x "$bin" ] || { echo "schemathesis: no executable stockmesh at $bin (cargo build -p stockmesh-cli)" >&2; exit 3; }
ready_timeout="${ST_READY_TIMEOUT_SECS:-120}"
max_examples="${ST_MAX_EXAMPLES:-50}"
seed="${ST_SEED:-20261207}"

# ---------------------------------------------------------------- python
venv="${ST_VENV:-$root/target/schemathesis-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/st" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "schemathesis: creating the venv in $venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi
py="$venv/bin/python"

# ---------------------------------------------------------------- mesh
work="$(mktemp -d "${TMPDIR:-/tmp}/stockmesh-schemathesis.XXXXXX")"
log="$work/mesh.log"
mesh_pid=""
cleanup() {
  local rc=$?
  if [ -n "$mesh_pid" ] && kill -0 "$mesh_pid" 2>/dev/null; then
    kill -INT "$mesh_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$mesh_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$mesh_pid" 2>/dev/null || true
  fi
  if [ "$rc" -eq 0 ]; then rm -rf "$work"; else echo "schemathesis: mesh log and report kept in $work" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r p1 p2 p3 p4 p5 < <("$py" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
export STOCKMESH_AUTH_PORT="$p1" STOCKMESH_PRODUCTS_PORT="$p2" STOCKMESH_INVENTORY_PORT="$p3"
export STOCKMESH_ORDERS_PORT="$p4" STOCKMESH_GATEWAY_PORT="$p5"
export STOCKMESH_DATA_DIR="$work/data"
export STOCKMESH_ADMIN_EMAIL="admin@stockmesh.local"
export STOCKMESH_ADMIN_PASSWORD="st-$("$py" -c 'import secrets; print(secrets.token_hex(12))')"
export STOCKMESH_RATE_LIMIT_RPS=0
export STOCKMESH_LOG="${STOCKMESH_LOG:-warn}"
unset STOCKMESH_NATS_URL
mkdir -p "$STOCKMESH_DATA_DIR"
base="http://127.0.0.1:$STOCKMESH_GATEWAY_PORT"

echo "schemathesis: starting $bin up (gateway $base)"
"$bin" up >"$log" 2>&1 &
mesh_pid=$!

"$py" - "$base" "$ready_timeout" "$mesh_pid" <<'EOF' || { tail -n 40 "$log" >&2; exit 3; }
import os, sys, time, urllib.request
base, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("schemathesis: the mesh exited before it was ready")
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.3)
sys.exit(f"schemathesis: the mesh was not ready after {timeout}s")
EOF

token="$("$py" - "$base" <<'EOF'
import json, os, sys, urllib.request
body = json.dumps({"email": os.environ["STOCKMESH_ADMIN_EMAIL"],
                   "password": os.environ["STOCKMESH_ADMIN_PASSWORD"]}).encode()
req = urllib.request.Request(sys.argv[1] + "/v1/auth/login", data=body,
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as r:
    print(json.load(r)["accessToken"])
EOF
)" || { echo "schemathesis: the admin could not sign in" >&2; tail -n 40 "$log" >&2; exit 3; }

# ---------------------------------------------------------------- run
echo "schemathesis: $("$venv/bin/st" --version), $max_examples examples per operation, seed $seed"
started=$(date +%s)
set +e
# From the temp dir: schemathesis keeps a .schemathesis/ cache in its working directory.
cd "$work"
"$venv/bin/st" --config-file "$here/schemathesis.toml" run "$base/openapi.json" \
  --url "$base" \
  --header "Authorization: Bearer $token" \
  --phases examples,coverage,fuzzing,stateful \
  --mode all \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --generation-codec "${ST_CODEC:-ascii}" \
  --generation-database none \
  --workers 1 \
  --request-timeout 20 \
  --no-color \
  --report junit,ndjson --report-dir "$work/report"
rc=$?
set -e
echo "schemathesis: finished in $(( $(date +%s) - started ))s with exit status $rc"
# One closing line a CI log reader understands: operations passed and failed (JUnit report).
"$py" - "$work/report" <<'EOF' || true
import glob, sys, xml.etree.ElementTree as ET
cases = failed = 0
for path in glob.glob(sys.argv[1] + "/junit*.xml"):
    for case in ET.parse(path).getroot().iter("testcase"):
        cases += 1
        failed += any(child.tag in ("failure", "error") for child in case)
print(f"schemathesis: {cases - failed} passed, {failed} failed")
EOF
exit "$rc"
