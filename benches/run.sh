#!/usr/bin/env bash
# Load benchmark: record write (1 KiB JSON) and read at 16 and 64 connections over HTTPS,
# beside /healthz over the same TLS, against a release build of `strongroom dev`
# (SoftHSM + swtpm, durable group commit, one audit event per request).
#   benches/run.sh [DURATION_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
PORT=${PORT:-28443}
PREFILL=${PREFILL:-10000}
BIN=${BIN:-target/release/strongroom}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin strongroom >/dev/null
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
STRONGROOM_LOG=warn "$BIN" dev --dir "$dir" --port "$PORT" >"$dir/out.log" 2>"$dir/err.log" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/dev.json" ] && break; sleep 0.1; done
url="https://127.0.0.1:$PORT"
op=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['operator_token'])" "$dir/dev.json")
c() { curl -sf --cacert "$dir/tls/ca.pem" --resolve "localhost:$PORT:127.0.0.1" "$@"; }
u="https://localhost:$PORT"
c -H "Authorization: Bearer $op" -X POST "$u/v1/admin/tenants" -d '{"tenant_id":"bench"}' >/dev/null
export SR_TOKEN=$(c -H "Authorization: Bearer $op" -X POST "$u/v1/admin/tokens" \
  -d '{"actor":"user:bench","tenant_id":"bench","permissions":["records:write","records:read"],"ttl_secs":86400}' |
  python3 -c "import json,sys;print(json.load(sys.stdin)['token'])")
export SR_PREFILL=$PREFILL
# Prefill: PREFILL records r<i> in 100 entities, 100 per batch.
python3 - "$PREFILL" > "$dir/prefill.sh" <<'PY'
import sys, json
n = int(sys.argv[1])
for e in range(100):
    ids = list(range(e, n, 100))
    for k in range(0, len(ids), 100):
        recs = [{"id": f"r{i}", "data": {"payload": "y" * 990, "n": i}} for i in ids[k:k+100]]
        print(f"pre-{e}\t" + json.dumps({"records": recs}))
PY
while IFS=$'\t' read -r ent body; do
  printf '%s' "$body" | c -H "Authorization: Bearer $SR_TOKEN" -X POST "$u/v1/entities/$ent/records" --data-binary @- >/dev/null
done < "$dir/prefill.sh"

run() { # name script conns
  local out; out=$(wrk -t2 -c"$3" -d"${DUR}s" --latency -s "benches/wrk/$2.lua" "$url" 2>&1)
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $5}' <<<"$out"); errs=${errs:-0}
  printf '| %-8s | %3s | %10s | %8s | %8s | %s |\n' "$1" "$3" "$rps" "$p50" "$p99" "$errs"
  echo "$1 $3 $rps" >> "$dir/results"
}
echo "| endpoint | conns | req/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|"
for conns in 16 64; do
  run healthz healthz $conns
  run write write $conns
  run read read $conns
done
echo
python3 - "$dir/results" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    name, conns, rps = line.split()
    r[(name, conns)] = float(rps)
for c in ("16", "64"):
    h = r[("healthz", c)]
    print(f"c={c}: write = {r[('write', c)]/h:.3f} x healthz ({r[('write', c)]/1516:.1f} x OpenBao write), "
          f"read = {r[('read', c)]/h:.3f} x healthz ({r[('read', c)]/5731:.1f} x OpenBao read)")
PY
batches=$(curl -s "http://127.0.0.1:$((PORT+1))/metrics" | awk '/group_commit_batch_size_(sum|count)/ {print $2}' | paste -sd' ')
echo "group commit: sum/count = $batches (mean requests per fsync)"
