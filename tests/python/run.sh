#!/usr/bin/env bash
# Runs the outside-client business story (story.py) against a freshly started mesh:
#
#   1. a Python venv with requirements.txt (tests/python/.venv, reused while the
#      requirements are unchanged; STORY_VENV=<dir> puts it elsewhere),
#   2. `stockmesh up` from an already-built binary ($1, default target/debug/stockmesh)
#      on free ports, with a fresh data dir and a random admin password,
#   3. waits until every service's grpc.health.v1 says SERVING (bounded),
#   4. runs the story,
#   5. stops the mesh with SIGINT and checks that it exits 0 in time.
#
# Databases: SQLite under the temp data dir by default. STORY_DATABASE=postgres creates
# four uniquely named PostgreSQL databases (story_<random>_<svc>) on STORY_PG_HOST
# (127.0.0.1), STORY_PG_PORT (5432), STORY_PG_USER (postgres) with psql, points
# STOCKMESH_<SVC>_DATABASE_URL at them and drops exactly those afterwards.
#
# Exit status: the story's status when it failed (1 a step failed, 2 mesh unreachable);
# otherwise 3 when the mesh did not become ready or did not stop cleanly with exit 0;
# 0 when everything held.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/stockmesh}"
[[ "$bin" = /* ]] || bin="$PWD/$bin"
[ -x "$bin" ] || { echo "run.sh: no executable stockmesh at $bin (build it: cargo build -p stockmesh-cli)" >&2; exit 3; }
ready_timeout="${STORY_READY_TIMEOUT_SECS:-120}"
stop_timeout="${STORY_STOP_TIMEOUT_SECS:-30}"
started_at=$(date +%s)

# ---------------------------------------------------------------- python
venv="${STORY_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "run.sh: creating the venv in $venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi
py="$venv/bin/python"

# ---------------------------------------------------------------- mesh settings
work="$(mktemp -d "${TMPDIR:-/tmp}/stockmesh-story.XXXXXX")"
log="$work/mesh.log"
mesh_pid=""
pg_dbs=()

cleanup() {
  local rc=$?
  if [ -n "$mesh_pid" ] && kill -0 "$mesh_pid" 2>/dev/null; then
    kill -TERM "$mesh_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$mesh_pid" 2>/dev/null || true
  fi
  for db in "${pg_dbs[@]}"; do
    psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -q -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 \
      || echo "run.sh: could not drop database $db" >&2
  done
  if [ "$rc" -eq 0 ]; then rm -rf "$work"; else echo "run.sh: mesh log kept in $log" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free ports chosen by the kernel (unless the caller set them), so a mesh already on
# 50051..50054/8080 is never disturbed.
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
export STOCKMESH_AUTH_PORT="${STOCKMESH_AUTH_PORT:-$p1}"
export STOCKMESH_PRODUCTS_PORT="${STOCKMESH_PRODUCTS_PORT:-$p2}"
export STOCKMESH_INVENTORY_PORT="${STOCKMESH_INVENTORY_PORT:-$p3}"
export STOCKMESH_ORDERS_PORT="${STOCKMESH_ORDERS_PORT:-$p4}"
export STOCKMESH_GATEWAY_PORT="${STOCKMESH_GATEWAY_PORT:-$p5}"
export STOCKMESH_DATA_DIR="$work/data"
export STOCKMESH_ADMIN_EMAIL="${STOCKMESH_ADMIN_EMAIL:-admin@stockmesh.local}"
export STOCKMESH_ADMIN_PASSWORD="${STOCKMESH_ADMIN_PASSWORD:-story-$("$py" -c 'import secrets; print(secrets.token_hex(12))')}"
mkdir -p "$STOCKMESH_DATA_DIR"

db_kind="${STORY_DATABASE:-sqlite}"
if [ "$db_kind" = postgres ]; then
  pg_host="${STORY_PG_HOST:-127.0.0.1}" pg_port="${STORY_PG_PORT:-5432}" pg_user="${STORY_PG_USER:-postgres}"
  tag="story_$("$py" -c 'import secrets; print(secrets.token_hex(4))')"
  for svc in auth products inventory orders; do
    db="${tag}_${svc}"
    psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -q -v ON_ERROR_STOP=1 \
      -c "CREATE DATABASE \"$db\"" >/dev/null
    pg_dbs+=("$db")
    export "STOCKMESH_${svc^^}_DATABASE_URL=postgres://$pg_user@$pg_host:$pg_port/$db"
  done
  echo "run.sh: PostgreSQL databases ${pg_dbs[*]}"
elif [ "$db_kind" != sqlite ]; then
  echo "run.sh: STORY_DATABASE must be sqlite or postgres, not $db_kind" >&2
  exit 3
fi

# ---------------------------------------------------------------- start, wait, run, stop
echo "run.sh: starting $bin up ($db_kind; auth :$STOCKMESH_AUTH_PORT products :$STOCKMESH_PRODUCTS_PORT" \
  "inventory :$STOCKMESH_INVENTORY_PORT orders :$STOCKMESH_ORDERS_PORT gateway :$STOCKMESH_GATEWAY_PORT)"
mesh_started_at=$(date +%s)
"$bin" up >"$log" 2>&1 &
mesh_pid=$!

deadline=$(( $(date +%s) + ready_timeout ))
until "$py" "$here/story.py" --ready-only >/dev/null 2>&1; do
  if ! kill -0 "$mesh_pid" 2>/dev/null; then
    echo "run.sh: the mesh exited before it was ready; its log:" >&2
    tail -n 40 "$log" >&2
    exit 3
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "run.sh: the mesh was not SERVING after ${ready_timeout}s; its log:" >&2
    tail -n 40 "$log" >&2
    exit 3
  fi
  sleep 0.3
done
ready_at=$(date +%s)
echo "run.sh: mesh SERVING $(( ready_at - mesh_started_at ))s after start"
grep -E '^  (auth|products|inventory|orders) ' "$log" || true

set +e
"$py" "$here/story.py"
story_rc=$?
set -e

kill -INT "$mesh_pid"
stop_deadline=$(( $(date +%s) + stop_timeout ))
while kill -0 "$mesh_pid" 2>/dev/null && [ "$(date +%s)" -lt "$stop_deadline" ]; do sleep 0.2; done
if kill -0 "$mesh_pid" 2>/dev/null; then
  echo "run.sh: the mesh did not stop within ${stop_timeout}s of SIGINT" >&2
  mesh_rc=124
else
  set +e
  wait "$mesh_pid"
  mesh_rc=$?
  set -e
  mesh_pid=""
fi
echo "run.sh: mesh stopped on SIGINT with exit status $mesh_rc; total $(( $(date +%s) - started_at ))s"

if [ "$story_rc" -ne 0 ]; then
  tail -n 40 "$log" >&2
  exit "$story_rc"
fi
if [ "$mesh_rc" -ne 0 ]; then
  tail -n 40 "$log" >&2
  exit 3
fi
exit 0
