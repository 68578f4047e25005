#!/usr/bin/env bash
# pair.sh LABEL SECONDS "SERVER CMD" "CLIENT CMD" [RATE_REGEX]
#
# One side-by-side measurement (DESIGN.md §9): the server pinned to CPU 0,
# the client to CPU 1, both started here and stopped after SECONDS. Prints
# one line:
#   LABEL rate=<median of the client's rate lines after the first>
#         server_cpu=<%> client_cpu=<%> cpu_s_per_M=<server CPU-seconds per
#         million messages> valid=<yes|no: client below 95% CPU>
# RATE_REGEX extracts the rate from the client's output lines (default:
# µWebSockets' load_test "Msg/sec: N"; msock-bench prints "rate=N").
# Waits up to 60 s for a quiet machine first. The server gets SIGTERM at the
# end; its stderr goes to /tmp/pair.LABEL.srv, the client's to .cli.
set -u
label=${1//[^A-Za-z0-9_.-]/_} secs=$2 srv=$3 cli=$4 re=${5:-'Msg/sec: *([0-9.]+)'}
busy() { read -r _ a b c d e f g h _ </proc/stat; echo $((a + b + c + f + g + h)) $((a + b + c + d + e + f + g + h)); }
for _ in $(seq 60); do
	set -- $(busy); b0=$1 t0=$2; sleep 1; set -- $(busy)
	[ $((100 * ($1 - b0) / ($2 - t0 + 1))) -lt 10 ] && break
done
taskset -c 0 $srv >/tmp/pair.$label.srv 2>&1 &
sp=$!
sleep 1
hz=$(getconf CLK_TCK)
# CPU ticks of a process and all its descendants (clients may fork workers).
cpu() {
	local t=0 p
	for p in $1 $(pgrep -P "$1" 2>/dev/null); do
		t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0)))
		[ "$p" != "$1" ] && t=$((t + $(cpu_children $p)))
	done
	echo $t
}
cpu_children() {
	local t=0 p
	for p in $(pgrep -P "$1" 2>/dev/null); do
		t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0) + $(cpu_children $p)))
	done
	echo $t
}
stdbuf -oL taskset -c 1 $cli >/tmp/pair.$label.cli 2>&1 &
cp=$!
sleep 2
s0=$(cpu $sp) c0=$(cpu $cp) w0=$(date +%s.%N)
sleep $((secs - 2))
s1=$(cpu $sp) c1=$(cpu $cp) w1=$(date +%s.%N)
kill -INT $cp 2>/dev/null; sleep 0.5; kill $cp 2>/dev/null
kill -TERM $sp 2>/dev/null; wait $sp 2>/dev/null; wait $cp 2>/dev/null
rates=$(grep -aoE "$re" /tmp/pair.$label.cli | grep -oE '[0-9.]+$')
# interval lines: drop the first (warm-up); a single summary line is kept
[ "$(echo "$rates" | grep -c .)" -gt 1 ] && rates=$(echo "$rates" | tail -n +2)
rates=$(echo "$rates" | sort -g)
n=$(echo "$rates" | grep -c .)
med=$(echo "$rates" | awk -v n=$n 'NR == int((n + 1) / 2) {print}')
awk -v l="$label" -v r=${med:-0} -v a=$s0 -v b=$s1 -v c=$c0 -v d=$c1 -v t0=$w0 -v t1=$w1 -v hz=$hz 'BEGIN {
	sc = (b - a) / hz / (t1 - t0); cc = (d - c) / hz / (t1 - t0)
	per = r > 0 ? sc * 1e6 / r : 0; ok = cc < 0.95 ? "yes" : "no"
	printf "%s rate=%.2f server_cpu=%.0f%% client_cpu=%.0f%% cpu_s_per_M=%.2f valid=%s\n", l, r, 100 * sc, 100 * cc, per, ok }'
