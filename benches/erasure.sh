#!/usr/bin/env bash
# Erasure cost vs database size: erase an entity of 1 000 records in a database holding
# OTHERS other records (default: 10 000, then 1 000 000), over HTTPS against a release
# `strongroom dev`. Prints the median of REPEATS erasures for each size.
#   benches/erasure.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
PORT=${PORT:-29443}
cargo build --release --bin strongroom >/dev/null
measure() { # others
  local others=$1 dir pid
  dir=$(mktemp -d)
  STRONGROOM_LOG=warn target/release/strongroom dev --dir "$dir" --port "$PORT" >"$dir/out.log" 2>"$dir/err.log" &
  pid=$!
  for _ in $(seq 100); do [ -s "$dir/dev.json" ] && break; sleep 0.1; done
  python3 - "$dir" "$PORT" "$others" "$REPEATS" <<'PY'
import json, ssl, sys, time, http.client, statistics
d, port, others, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
info = json.load(open(f"{d}/dev.json"))
ctx = ssl.create_default_context(cafile=info["ca_cert"])
conn = http.client.HTTPSConnection("localhost", port, context=ctx)
def call(method, path, token, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = conn.getresponse(); data = r.read()
    if r.status >= 300: raise SystemExit(f"{method} {path}: {r.status} {data[:200]}")
    return json.loads(data) if data else None
op = info["operator_token"]
call("POST", "/v1/admin/tenants", op, {"tenant_id": "bench"})
tok = call("POST", "/v1/admin/tokens", op, {"actor": "user:bench", "tenant_id": "bench",
          "permissions": ["records:write", "records:read", "entity:erase"], "ttl_secs": 86400})["token"]
def fill(entity, n):
    for k in range(0, n, 1000):
        recs = [{"data": {"v": i, "pad": "p" * 64}} for i in range(k, min(n, k + 1000))]
        call("POST", f"/v1/entities/{entity}/records", tok, {"records": recs})
t0 = time.time()
for e in range(0, others, 1000):
    fill(f"other-{e // 1000}", min(1000, others - e))
fill_s = time.time() - t0
times = []
for r in range(repeats):
    fill(f"target-{r}", 1000)
    t = time.perf_counter()
    rep = call("DELETE", f"/v1/admin/entity/target-{r}", tok)
    times.append(time.perf_counter() - t)
    assert rep["records_deleted"] == 1000, rep
print(f"| {others:>9} | {statistics.median(times)*1000:8.2f} ms | {min(times)*1000:8.2f} ms | {max(times)*1000:8.2f} ms | (fill {fill_s:.0f} s)")
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
echo "| other records | median erase (1000 records) | min | max |"
echo "|---|---|---|---|"
for n in ${SIZES:-10000 1000000}; do measure "$n"; done
