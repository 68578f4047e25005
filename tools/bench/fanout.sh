#!/usr/bin/env bash
# fanout.sh NAME ROUNDS -- MSOCK_BENCH_FANOUT_ARGS...
#
# Chat fan-out side by side: msock-bench --scenario fanout against
# mezon-sock's /ws (dev mode, $CORES workers, default 1, on CPU 0) and, if
# UWS_FANOUT=BINARY is set (a µWebSockets pub/sub app speaking the same
# protocol subset, built outside this repo, port as argv[1]), against it,
# alternating, ROUNDS times. The client checks every stream's seq (a gap or
# reorder fails the run). Prints each run, the medians, and from
# mezon-sock's own counters: sends and io_uring_enter calls per delivery,
# and its publish-to-flush / hop / iteration histograms (server-side
# latency, apart from the client's own loop).
# Example: tools/bench/fanout.sh one-stream 5 -- --conns 1000 --streams 1 --joins 1 --publishers 1
set -u
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh
name=$1 rounds=$2
shift 3
args="$*"
cores=${CORES:-1}
out=$(mktemp)
port=9900
for r in $(seq "$rounds"); do
	port=$((port + 2))
	tools/bench/pair.sh "mezon-sock.$name" 16 \
		"build/mezon-sock --dev --cores $cores --tls-listen off --admin-listen off --listen 127.0.0.1:$port" \
		"build/msock-bench --url ws://127.0.0.1:$port/ws --scenario fanout $args --duration 60 --warmup 2 --quiet" \
		'rate=([0-9.]+)' | tee -a "$out"
	grep -a "stats total" "/tmp/pair.mezon-sock.$name.srv" | python3 -c '
import sys
f = dict(kv.split("=", 1) for kv in sys.stdin.read().split() if "=" in kv)
d = max(int(f["deliveries"]), 1)
print("   counters: deliveries=%s sends/delivery=%.4f enters/delivery=%.5f partial_sends=%s" % (
    f["deliveries"], int(f["sends"]) / d, int(f["enters"]) / d, f["partial_sends"]))'
	grep -a "end to end" "/tmp/pair.mezon-sock.$name.cli" | sed 's/^/   latency:/'
	# The server's own share of the latency (its histograms, dumped at exit):
	# publish received -> bytes handed to the kernel, per recipient.
	grep -aE "histogram \(exit\) (publish_to_flush|hop|iteration):" "/tmp/pair.mezon-sock.$name.srv" |
		sed 's/^.*histogram (exit) /   server: /'
	grep -aoE "seq_gaps=[0-9]+ seq_dups=[0-9]+ seq_reorders=[0-9]+ errors=[0-9]+ status=[a-zA-Z]+" "/tmp/pair.mezon-sock.$name.cli" | sed 's/^/   check: /'
	if [ -n "${UWS_FANOUT:-}" ]; then
		port=$((port + 2))
		tools/bench/pair.sh "uws.$name" 16 "$UWS_FANOUT $port" \
			"build/msock-bench --url ws://127.0.0.1:$port/ws --scenario fanout $args --duration 60 --warmup 2 --quiet" \
			'rate=([0-9.]+)' | tee -a "$out"
		grep -a "end to end" "/tmp/pair.uws.$name.cli" | sed 's/^/   latency:/'
		grep -aoE "seq_gaps=[0-9]+ seq_dups=[0-9]+ seq_reorders=[0-9]+ errors=[0-9]+ status=[a-zA-Z]+" "/tmp/pair.uws.$name.cli" | sed 's/^/   check: /'
	fi
done
echo "== deliveries/s medians"
summary=$(summarize "$out")
echo "$summary"
record "chat fan-out" "$(env | grep -E '^(UWS_[A-Z]+|TLS|COUNTS|CORES|CLIENT|BROADCAST_TEST)=' | tr '\n' ' ')$0 $*" "$summary"
rm -f "$out"
