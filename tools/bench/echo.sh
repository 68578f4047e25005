#!/usr/bin/env bash
# echo.sh [ROUNDS] — echo side by side (DESIGN.md §9).
#
# For 100 and 1,000 connections, each keeping one 20-byte text message in
# flight (the closed loop of µWebSockets' benchmarks/load_test.c), runs
# mezon-sock and each µWebSockets EchoServer given in UWS_ECHO (a
# space-separated list of NAME=BINARY taking the port as argv[1], built
# outside this repo), alternating, ROUNDS times (default 5), server on CPU 0,
# client on CPU 1. The client is msock-bench (CLIENT=msb, default) or
# µWebSockets' load_test (CLIENT=LOAD_TEST_BINARY). Prints every run and, per
# server and size, the median rate, spread and server CPU-seconds per
# million messages. TLS=1: the same over wss (UWS_ECHO then names TLS
# servers, e.g. µWebSockets' EchoServer built as SSLApp).
set -u
cd "$(dirname "$0")/../.."
. tools/bench/lib.sh
rounds=${1:-5}
ours=${OURS:-build/mezon-sock}
uws=${UWS_ECHO:-}
client=${CLIENT:-msb}
tls=${TLS:-0}
scheme=ws
[ "$tls" = 1 ] && scheme=wss
out=$(mktemp)
port=9500
run() { # name conns servercmd
	local name=$1 n=$2 srv=$3 cli re
	if [ "$client" = msb ]; then
		cli="build/msock-bench --url $scheme://127.0.0.1:$port/ --scenario echo --conns $n --inflight 1 --size 20 --duration 30 --warmup 2 --rate 5000 --quiet"
		re='rate=([0-9.]+)'
	else
		cli="$client $n 127.0.0.1 $port $tls 0"
		re='Msg/sec: *([0-9.]+)'
	fi
	tools/bench/pair.sh "$name.$n" 14 "$srv" "$cli" "$re" | tee -a "$out"
	port=$((port + 1))
}
# --max-handshakes-per-ip: the client opens up to 512 connections at once
# from one address (msock-bench --max-pending), more than the automatic
# limit of --max-conns 5000 (312).
for n in ${COUNTS:-100 1000}; do
	for r in $(seq "$rounds"); do
		if [ "$tls" = 1 ]; then
			run mezon-sock $n "$ours --dev --diag --diag-root echo --cores 1 --max-conns 5000 --max-handshakes-per-ip 4096 --listen off --tls-listen 127.0.0.1:$port"
		else
			run mezon-sock $n "$ours --dev --diag --diag-root echo --cores 1 --max-conns 5000 --max-handshakes-per-ip 4096 --listen 127.0.0.1:$port --tls-listen off"
		fi
		for u in $uws; do
			run "${u%%=*}" $n "${u#*=} $port"
		done
	done
done
echo "== medians (msg/s, spread min..max, server CPU-s per million msgs, valid runs)"
summary=$(summarize "$out")
echo "$summary"
record "echo" "$(env | grep -E '^(UWS_[A-Z]+|TLS|COUNTS|CORES|CLIENT|BROADCAST_TEST)=' | tr '\n' ' ')$0 $*" "$summary"
rm -f "$out"
