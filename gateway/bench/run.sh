#!/usr/bin/env bash
# GetProduct four ways, side by side: direct gRPC to products, and through the gateway as
# gRPC, gRPC-web and REST. h2load (nghttp2-client) drives gRPC and gRPC-web over h2c, wrk
# drives REST over HTTP/1.1. The mesh runs pinned to core 0, the load generator to core 1.
#
#   apt-get install -y nghttp2-client wrk
#   cargo build --release -p stockmesh-cli     # builds target/release/stockmesh
#   gateway/bench/run.sh                       # prints a Markdown table for BENCHMARKS.md
#
# Settings: DURATION (s, default 10), CONNS (default 16), STREAMS per h2 connection
# (default 8). Access logs are off (RUST_LOG=warn) so the table measures proxying and
# transcoding, not log formatting.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-8}
BIN=${BIN:-target/release/stockmesh}
for tool in h2load wrk taskset python3 curl; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "build $BIN first: cargo build --release -p stockmesh-cli" >&2; exit 1; }

work=$(mktemp -d)
export STOCKMESH_DATA_DIR=$work/data
export STOCKMESH_ADMIN_PASSWORD=bench-admin-password
export STOCKMESH_AUTH_PORT=15051 STOCKMESH_PRODUCTS_PORT=15052
export STOCKMESH_INVENTORY_PORT=15053 STOCKMESH_ORDERS_PORT=15054
export STOCKMESH_GATEWAY_PORT=18080
export STOCKMESH_RATE_LIMIT_RPS=10000000 STOCKMESH_RATE_LIMIT_BURST=10000000
export RUST_LOG=warn
gw=http://127.0.0.1:$STOCKMESH_GATEWAY_PORT
direct=http://127.0.0.1:$STOCKMESH_PRODUCTS_PORT

taskset -c 0 "$BIN" up >"$work/mesh.log" 2>&1 &
mesh=$!
trap 'kill $mesh 2>/dev/null; wait $mesh 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
    curl -fs "$gw/readyz" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fs "$gw/readyz" >/dev/null || { cat "$work/mesh.log"; echo "mesh not ready" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token=$(curl -fs "$gw/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"admin@stockmesh.local\",\"password\":\"$STOCKMESH_ADMIN_PASSWORD\"}" | json "['accessToken']")
id=$(curl -fs "$gw/v1/products" -H 'content-type: application/json' -H "authorization: Bearer $token" \
    -d '{"sku":"BENCH-1","name":"Bench product","priceCents":"1999"}' | json "['product']['id']")
# One gRPC frame: GetProductRequest{id} = field 1 (0x0a), length 36.
python3 - "$id" "$work/get.bin" <<'PY'
import struct, sys
msg = b"\x0a" + bytes([len(sys.argv[1])]) + sys.argv[1].encode()
open(sys.argv[2], "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY

h2() { # name url content-type
    taskset -c 1 h2load -D "$DURATION" -c "$CONNS" -m "$STREAMS" -d "$work/get.bin" \
        -H "content-type: $3" -H 'te: trailers' \
        "$2/stockmesh.products.v1.ProductService/GetProduct" >"$work/$1.txt"
    local rps p50
    rps=$(awk '/^finished in/ {print $4}' "$work/$1.txt")
    p50=$(awk '/^time for request:/ {print $6}' "$work/$1.txt" | head -1)
    echo "| $1 | h2load -c$CONNS -m$STREAMS | ${rps%,} | mean ${p50:-?} |"
}
echo "| path | tool | req/s | latency |"
echo "|---|---|---|---|"
h2 "direct gRPC (products)" "$direct" application/grpc
h2 "gateway gRPC" "$gw" application/grpc
h2 "gateway gRPC-web" "$gw" application/grpc-web+proto
taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$gw/v1/products/$id" >"$work/rest.txt"
rps=$(awk '/^Requests\/sec/ {print $2}' "$work/rest.txt")
p50=$(awk '$1=="50%" {print $2}' "$work/rest.txt")
echo "| gateway REST | wrk -c$CONNS | $rps | p50 $p50 |"
grep -h "status codes\|Non-2xx" "$work"/*.txt >&2 || true

# Added latency: one request at a time (no queueing), h2load for all four so the figures
# compare (REST over HTTP/1.1 with --h1). Mean ≈ p50 here: the spread is tens of µs.
lat() { # name url content-type [extra h2load args]
    local name=$1 url=$2 ct=$3; shift 3
    taskset -c 1 h2load -D 5 -c 1 -m 1 "$@" -H "content-type: $ct" -H 'te: trailers' "$url" >"$work/lat.txt"
    echo "| $name | $(awk '/^time for request:/ {print $4" / "$6" / "$5}' "$work/lat.txt") |"
}
echo
echo "| path, one request at a time | min / mean / max |"
echo "|---|---|"
lat "direct gRPC" "$direct/stockmesh.products.v1.ProductService/GetProduct" application/grpc -d "$work/get.bin"
lat "gateway gRPC" "$gw/stockmesh.products.v1.ProductService/GetProduct" application/grpc -d "$work/get.bin"
lat "gateway gRPC-web" "$gw/stockmesh.products.v1.ProductService/GetProduct" application/grpc-web+proto -d "$work/get.bin"
lat "gateway REST" "$gw/v1/products/$id" application/json --h1
