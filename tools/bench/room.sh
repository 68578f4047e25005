#!/usr/bin/env bash
# room.sh [ROUNDS] — fan-out with µWebSockets' own client.
#
# µWebSockets' benchmarks/broadcast_test (BROADCAST_TEST=binary, built
# outside this repo): N clients each send one 20-byte message per iteration
# and wait until every client got all N; deliveries/s = iterations/s × N².
# Servers: mezon-sock's /room (--diag --diag-root room, one worker on CPU 0)
# and the µWebSockets apps in UWS_ROOM (NAME=BINARY taking the port; the
# TLS ones in UWS_ROOM_TLS) publishing every message to one topic, sender
# included. N in 100 300 1000 (or $COUNTS), plain and TLS, ROUNDS rounds.
set -u
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh
rounds=${1:-5}
bt=${BROADCAST_TEST:?set BROADCAST_TEST to µWebSockets benchmarks/broadcast_test}
out=$(mktemp)
port=9700
re='Iterations/second \([0-9]+ clients\): *[0-9.]+'
for n in ${COUNTS:-100 300 1000}; do
	for tls in 0 1; do
		for r in $(seq "$rounds"); do
			port=$((port + 2))
			if [ $tls = 1 ]; then
				srv="build/mezon-sock --dev --diag --diag-root room --cores 1 --listen 127.0.0.1:$((port + 1)) --tls-listen 127.0.0.1:$port"
				list=${UWS_ROOM_TLS:-}
			else
				srv="build/mezon-sock --dev --diag --diag-root room --cores 1 --listen 127.0.0.1:$port --tls-listen off"
				list=${UWS_ROOM:-}
			fi
			tools/bench/pair.sh "mezon-sock.tls$tls.$n" 16 "$srv" "$bt $n 127.0.0.1 $port $tls" "$re" | tee -a "$out"
			for u in $list; do
				port=$((port + 2))
				tools/bench/pair.sh "${u%%=*}.tls$tls.$n" 16 "${u#*=} $port" "$bt $n 127.0.0.1 $port $tls" "$re" | tee -a "$out"
			done
		done
	done
done
echo "== iterations/s (deliveries/s = it/s x N^2); server CPU-s per million iterations"
summary=$(summarize "$out")
echo "$summary"
record "broadcast /room" "$(env | grep -E '^(UWS_[A-Z]+|TLS|COUNTS|CORES|CLIENT|BROADCAST_TEST)=' | tr '\n' ' ')$0 $*" "$summary"
rm -f "$out"
