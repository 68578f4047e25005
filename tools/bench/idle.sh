#!/usr/bin/env bash
# idle.sh — idle-connection memory, side by side (DESIGN.md §9).
#
# For each server (mezon-sock, plus NAME=BINARY entries in UWS_IDLE taking
# the port as argv[1], built outside this repo) and each N in 5000 10000
# 15000 (or $COUNTS): start the server fresh on CPU 0, open N idle plain
# WebSocket connections with msock-bench on CPU 1, hold them, and read the
# server's VmRSS before any connection and after all are open and settled,
# and the kernel slab growth (both socket ends live on this machine).
# Prints per run, then per server: RSS at zero connections, and the RSS
# slope per connection (least squares over the N points).
# Usage: tools/bench/idle.sh [PATH] (PATH: WebSocket path, default /)
# TLS=1: the same over wss (servers in UWS_IDLE then being TLS ones).
# EXCHANGE=B: each connection first exchanges one B-byte message with the
# echo route (msock-bench --exchange), then idles: memory after traffic.
set -u
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh
path=${1:-/}
counts=${COUNTS:-5000 10000 15000}
tls=${TLS:-0}
scheme=ws
if [ "$tls" = 1 ]; then
	scheme=wss
	ours=${OURS:-build/mezon-sock --dev --diag --diag-root echo --cores 2 --max-conns 40000 --listen off --tls-listen}
else
	ours=${OURS:-build/mezon-sock --dev --diag --diag-root echo --cores 2 --max-conns 40000 --tls-listen off --listen}
fi

out=$(mktemp)
port=9600
servers=("mezon-sock=$ours 127.0.0.1:")
for u in ${UWS_IDLE:-}; do servers+=("$u "); done
for s in "${servers[@]}"; do
	name=${s%%=*} cmd=${s#*=}
	for n in $counts; do
		port=$((port + 1))
		taskset -c 0 $cmd$port >/tmp/idle.$name.$n.srv 2>&1 &
		sp=$!
		sleep 1.5
		taskset -c 1 build/msock-bench --url "$scheme://127.0.0.1:$port$path" --scenario idle \
			--conns "$n" --threads 1 --rate 5000 --duration 4 --settle 3 --exchange "${EXCHANGE:-0}" \
			--server-pid "$sp" --quiet >/tmp/idle.$name.$n.cli 2>&1
		kill -TERM $sp 2>/dev/null; sleep 0.3; kill -KILL $sp 2>/dev/null; wait $sp 2>/dev/null
		line=$(grep -a "server rss:" /tmp/idle.$name.$n.cli)
		slab=$(grep -a "kernel slab:" /tmp/idle.$name.$n.cli | grep -oE '[0-9]+ B/conn' | head -1)
		opened=$(grep -aoE 'opened=[0-9]+' /tmp/idle.$name.$n.cli)
		before=$(echo "$line" | grep -oE 'before [0-9]+' | grep -oE '[0-9]+')
		settled=$(echo "$line" | grep -oE 'settled [0-9]+' | grep -oE '[0-9]+')
		echo "$name n=$n $opened rss_before_kB=$before rss_settled_kB=$settled slab=${slab// /_}" | tee -a "$out"
	done
done
summary=$(python3 - "$out" <<'PY'
import sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split(); f = dict(kv.split("=", 1) for kv in p[1:])
    if f.get("rss_settled_kB"):
        runs[p[0]].append((int(f["n"]), int(f["rss_settled_kB"]) * 1024, int(f["rss_before_kB"]) * 1024))
for k, v in runs.items():
    n = len(v); sx = sum(a for a, _, _ in v); sy = sum(b for _, b, _ in v)
    sxx = sum(a * a for a, _, _ in v); sxy = sum(a * b for a, b, _ in v)
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx) if n > 1 else 0
    print("%-12s rss_zero_conns=%.0f kB slope=%.0f B/conn (points: %s)" % (
        k, min(z for _, _, z in v) / 1024, slope, ", ".join("%d:%d kB" % (a, b // 1024) for a, b, _ in v)))
PY
)
echo "$summary"
record "idle memory" "$(env | grep -E '^(UWS_IDLE|TLS|COUNTS)=' | tr '\n' ' ')$0 $*" "$summary"
rm -f "$out"
