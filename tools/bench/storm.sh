#!/usr/bin/env bash
# storm.sh — TLS handshake rate of mezon-sock, full and resumed, beside the
# machine's crypto bound (DESIGN.md §9 for the method).
#
# What it does, in a bounded time (about (RUNS * 2 + 1) * (WARMUP + DURATION
# + 2) seconds plus ~20 s of crypto speed tests; ~100 s with the defaults):
#   1. Waits (at most 60 s) for a quiet machine.
#   2. Crypto bound on CPU 0 with `bssl-tool speed` (android-boringssl, the
#      library the server links), before and after the runs, the faster of
#      the two measurements of each operation counting: X25519 = one ephemeral key generation
#      (Curve25519 base-point multiplication) plus one shared secret
#      (arbitrary-point multiplication), ECDSA P-256 sign. A full TLS 1.3
#      handshake costs the server at least one of each, so
#         full bound    = 1 / (1/x25519 + 1/p256_sign)   handshakes/s per core
#      a resumed one (psk_dhe_ke: ECDHE, no certificate signature)
#         resumed bound = x25519
#   3. RUNS rounds of two runs of `msock-bench --scenario storm` on CPU 1:
#      full handshakes, then with --resume (each reconnect offers the ticket
#      of the slot's previous connection). Every run gets a fresh server on
#      CPU 0 (one worker, self-signed ECDSA P-256 dev certificate, TLS on
#      127.0.0.1:PORT). Each run: CONNS concurrent connect -> TLS ->
#      WebSocket upgrade -> close -> reconnect loops, unpaced, WARMUP s then
#      a measured window of DURATION s; the server's CPU time is sampled over
#      the window (--server-pid). A run whose server died, or whose client
#      failed, is reported and left out of the medians.
#   4. One plain ws:// storm (same shape, no TLS): the server's CPU per
#      connection without TLS (TCP accept, upgrade, close).
#   5. Prints every run's RESULT fields, then per kind the medians of
#      handshakes/s, server CPU-seconds per 1000 handshakes, the server's
#      capacity this implies (1000 / that: handshakes per server CPU-second),
#      the same less the plain cost (what TLS alone costs), client CPU and
#      the resumed fraction, each beside the bound.
#
# Reading it: on a 2-core machine the client needs about as much CPU per full
# handshake as the server (X25519 plus an ECDSA P-256 *verify*, slower than a
# sign), so the measured rate is often client-bound (client_cpu ~100%, marked
# CLIENT-BOUND); the server's cost per handshake, and the capacity derived
# from it, stay valid and are what to compare with the bound (target >= 70%).
#
# Side by side: UWS_STORM="NAME=BINARY ..." adds servers built outside this
# repo (each takes the port as argv[1] and serves wss:// with an ECDSA P-256
# certificate, e.g. µWebSockets' EchoServer as SSLApp); every round then runs
# full and resumed storms against each of them too, alternating, and
# UWS_STORM_PLAIN="NAME=BINARY ..." (plain ws:// servers) adds their plain
# storm. The medians are printed per server.
#
# Environment (defaults): SERVER (build/mezon-sock), BENCH (build/msock-bench),
# RUNS (5), DURATION (4), WARMUP (1), CONNS (32), PORT (9640), URL_PATH
# (/echo), TLS12 (0; 1 = TLS 1.2 for both kinds, resumption by ticket:
# no bound applies to it), SERVER_ARGS (extra server flags).
set -u
cd "$(dirname "$0")/../.."
server=${SERVER:-build/mezon-sock}
bench=${BENCH:-build/msock-bench}
runs=${RUNS:-5}
dur=${DURATION:-4}
warm=${WARMUP:-1}
conns=${CONNS:-32}
port=${PORT:-9640}
path=${URL_PATH:-/echo}
tls12=${TLS12:-0}
out=$(mktemp)
srvlog=$(mktemp)
sp=
cleanup() {
	[ -n "$sp" ] && kill -TERM "$sp" 2>/dev/null && wait "$sp" 2>/dev/null
	rm -f "$out" "$srvlog"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for b in "$server" "$bench"; do
	[ -x "$b" ] || { echo "storm.sh: $b not built" >&2; exit 2; }
done
"$server" --help 2>&1 | grep -q -- --tls-listen || { echo "storm.sh: $server has no --tls-listen" >&2; exit 2; }
command -v bssl-tool >/dev/null || { echo "storm.sh: bssl-tool missing (apt-get install android-boringssl)" >&2; exit 2; }

# 1. quiet machine (< 10% busy over one second), at most 60 s
busy() { read -r _ a b c d e f g h _ </proc/stat; echo $((a + b + c + f + g + h)) $((a + b + c + d + e + f + g + h)); }
for _ in $(seq 60); do
	set -- $(busy); b0=$1 t0=$2; sleep 1; set -- $(busy)
	load=$((100 * ($1 - b0) / ($2 - t0 + 1)))
	[ $load -lt 10 ] && break
done
[ $load -ge 10 ] && echo "== note: the machine is still ${load}% busy after 60 s; figures may be disturbed"

# 2. crypto bound, on the server's core. bssl-tool's filter is a substring
# of the test name, except that any filter containing "25519" runs the
# whole 25519 group (Ed25519 and Curve25519).
crypto() { # -> "x_base x_arb p256_sign" ops/s on CPU 0
	local speed
	speed=$(taskset -c 0 timeout 60 bssl-tool speed -timeout 1 -filter 25519 2>&1
		taskset -c 0 timeout 30 bssl-tool speed -timeout 1 -filter "ECDSA P-256" 2>&1)
	ops() { echo "$speed" | grep -F "$1" | sed -nE 's/.*\(([0-9.]+) ops\/sec\).*/\1/p' | head -1; }
	local xb xa ps
	xb=$(ops "Curve25519 base-point multiplication")
	xa=$(ops "Curve25519 arbitrary point multiplication")
	ps=$(ops "ECDSA P-256 signing")
	if [ -z "$xb" ] || [ -z "$xa" ] || [ -z "$ps" ]; then
		echo "storm.sh: could not parse bssl-tool speed output:" >&2
		echo "$speed" >&2
		exit 1
	fi
	echo "$xb $xa $ps"
}
read -r x_base x_arb p256 <<<"$(crypto)"
[ -n "$x_base" ] || exit 1
echo "== crypto before (bssl-tool speed, CPU 0): X25519 keygen $x_base/s, X25519 shared secret $x_arb/s, ECDSA P-256 sign $p256/s"

# 3. a fresh server on CPU 0 per run, storms on CPU 1
start_server() { # [BINARY PORT]: ours by default, else BINARY taking the port as argv[1]
	local p=$port
	if [ $# -eq 2 ]; then
		p=$2
		taskset -c 0 "$1" "$p" >"$srvlog" 2>&1 &
	else
		taskset -c 0 "$server" --dev --diag --cores 1 --max-conns 10000 --log-level warn \
			--listen 127.0.0.1:$((port + 1)) --tls-listen 127.0.0.1:$port ${SERVER_ARGS:-} >"$srvlog" 2>&1 &
	fi
	sp=$!
	for _ in $(seq 50); do
		(exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && return 0
		kill -0 "$sp" 2>/dev/null || break
		sleep 0.1
	done
	echo "storm.sh: server did not start:" >&2
	cat "$srvlog" >&2
	exit 1
}
stop_server() { # sets $died (how it ended) if the server was gone before it was asked to stop
	died=
	if kill -0 "$sp" 2>/dev/null; then
		kill -TERM "$sp" 2>/dev/null
		wait "$sp" 2>/dev/null
	else
		wait "$sp" 2>/dev/null
		local rc=$?
		died="exit status $rc"
		[ $rc -gt 128 ] && died="$died, SIG$(kill -l $((rc - 128)))"
	fi
	sp=
}

ver=$([ "$tls12" = 1 ] && echo --tls12)
run_one() { # KIND ROUND [NAME BINARY]: one storm against a fresh server, appended to $out
	local kind=$1 r=$2 name=${3:-mezon-sock} url="wss://127.0.0.1:$port$path" opts=$ver cmd outp line
	[ $kind = resumed ] && opts="$ver --resume"
	[ $kind = plain ] && url="ws://127.0.0.1:$((port + 1))$path" opts=
	if [ $# -eq 4 ]; then
		# another server: its own port (plain or TLS as its binary serves)
		local p=$((port + 2))
		url="${url%%://*}://127.0.0.1:$p$path"
		start_server "$4" $p
	else
		start_server
	fi
	cmd="$bench --url $url --scenario storm --conns $conns --warmup $warm --duration $dur --server-pid $sp --close-timeout 2 --quiet $opts"
	[ "$r" = 1 ] && echo "   $name $kind: $cmd"
	outp=$(taskset -c 1 timeout $((warm + dur + 20)) $cmd 2>&1)
	line=$(echo "$outp" | grep '^RESULT')
	stop_server
	if [ -n "$died" ]; then
		echo "$name $kind #$r: THE SERVER DIED during the run ($died; left out); its log ends:"
		tail -3 "$srvlog" | sed 's/^/     /'
	elif [ -z "$line" ] || ! echo "$line" | grep -q 'status=ok'; then
		echo "$name $kind #$r: client failed (left out): $(echo "$outp" | grep -E '^(closes|FAILED)' | tr '\n' ' ')"
	else
		echo "$name $kind $line" >>"$out"
		echo "$name $kind #$r $(echo "$line" | grep -oE '(rate|server_cpu_s|client_cpu_pct|resumed_pct|tls_full_p50_us|tls_res_p50_us|status)=[^ ]+' | tr '\n' ' ')"
	fi
}
echo "== storm: $conns concurrent, ${warm}s warmup + ${dur}s window, $runs rounds; server: $server (CPU 0), client: $bench (CPU 1)"
for r in $(seq "$runs"); do
	run_one full $r
	run_one resumed $r
	for u in ${UWS_STORM:-}; do
		run_one full $r "${u%%=*}" "${u#*=}"
		run_one resumed $r "${u%%=*}" "${u#*=}"
	done
done
# one plain ws:// storm: the server's cost of a connection without TLS
# (TCP, upgrade, close), subtracted below to show what TLS alone costs
run_one plain 1
for u in ${UWS_STORM_PLAIN:-}; do
	run_one plain 1 "${u%%=*}" "${u#*=}"
done

# 5. medians beside the bound. The crypto speed is measured again after the
# runs; the bound uses the faster of the two measurements of each operation
# (noise on a shared machine only ever slows a measurement down).
read -r xb2 xa2 ps2 <<<"$(crypto)"
[ -n "$xb2" ] || exit 1
echo "== crypto after: X25519 keygen $xb2/s, X25519 shared secret $xa2/s, ECDSA P-256 sign $ps2/s"
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
x_base=$(max "$x_base" "$xb2") x_arb=$(max "$x_arb" "$xa2") p256=$(max "$p256" "$ps2")
python3 - "$out" "$x_base" "$x_arb" "$p256" "$tls12" "$runs" <<'PY'
import sys, statistics
path, xb, xa, sign, tls12, runs = sys.argv[1], *map(float, sys.argv[2:5]), sys.argv[5] == "1", int(sys.argv[6])
x25519 = 1 / (1 / xb + 1 / xa)
bound = {"full": 1 / (1 / x25519 + 1 / sign), "resumed": None if tls12 else x25519, "plain": None}
rows = {}  # server -> kind -> runs
for line in open(path):
    name, kind, _, *kv = line.split()
    rows.setdefault(name, {"full": [], "resumed": [], "plain": []})[kind].append(dict(f.split("=", 1) for f in kv))
def per1k(r):  # server CPU-seconds per 1000 handshakes, median over runs
    v = [float(f["server_cpu_s"]) * 1000 / float(f["msgs"]) for f in r if float(f.get("msgs", 0)) > 0 and "server_cpu_s" in f]
    return statistics.median(v) if v else 0.0
print("== medians, %s, per core" % ("TLS 1.2" if tls12 else "TLS 1.3"))
print("crypto bound: X25519 (keygen + shared secret) %.0f/s, ECDSA P-256 sign %.0f/s -> full = 1/(1/x25519 + 1/p256_sign) = %.0f/s; "
      "resumed = %s" % (x25519, sign, bound["full"], "n/a (TLS 1.2 ticket resumption: no ECDHE)" if tls12 else "x25519 = %.0f/s" % x25519))
for name, kinds in rows.items():
    print("-- %s" % name)
    plain = per1k(kinds["plain"])
    if kinds["plain"]:
        print("plain    %6.0f conns/s (1 run) | server %.3f cpu-s per 1000 connections (TCP + upgrade + close, no TLS)"
              % (float(kinds["plain"][0]["rate"]), plain))
    for kind in ("full", "resumed"):
        r = kinds[kind]
        if not r and not (kinds["full"] or kinds["resumed"]) and kinds["plain"]:
            continue  # a plain-only server (UWS_STORM_PLAIN)
        if not r:
            print("%-8s no valid runs of %d" % (kind, runs))
            continue
        med = lambda k: statistics.median(float(f[k]) for f in r)
        rate, p, cli, b = med("rate"), per1k(r), med("client_cpu_pct"), bound[kind]
        vs = lambda v: " = %.0f%% of bound" % (100 * v / b) if b and v else ""
        print("%-8s %6.0f handshakes/s%s (client cpu %.0f%%%s; %.1f%% resumed; tls p50 %.0f us; %d/%d runs valid)"
              % (kind, rate, vs(rate), cli, ", CLIENT-BOUND" if cli >= 95 else "", med("resumed_pct"),
                 med("tls_full_p50_us" if kind == "full" else "tls_res_p50_us"), len(r), runs))
        if p > 0:
            print("         server %.3f cpu-s per 1000 handshakes -> %.0f handshakes per server cpu-s%s"
                  % (p, 1000 / p, vs(1000 / p)))
        if p > plain > 0:
            print("         TLS alone (minus plain): %.3f cpu-s per 1000 -> %.0f/s%s"
                  % (p - plain, 1000 / (p - plain), vs(1000 / (p - plain))))
PY
