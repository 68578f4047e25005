#!/usr/bin/env bash
# storm.sh — TLS handshake rate of mezon-sock, full and resumed, beside the
# machine's crypto bound (issue 4 acceptance; DESIGN.md §9 for the method).
#
# What it does, in a bounded time (about RUNS * 2 * (WARMUP + DURATION + 2)
# seconds plus ~10 s of crypto speed tests; ~90 s with the defaults):
#   1. Waits (at most 60 s) for a quiet machine.
#   2. Crypto bound on CPU 0 with `bssl-tool speed` (android-boringssl, the
#      library the server links): X25519 = one ephemeral key generation
#      (Curve25519 base-point multiplication) plus one shared secret
#      (arbitrary-point multiplication), ECDSA P-256 sign. A full TLS 1.3
#      handshake costs the server at least one of each, so
#         full bound    = 1 / (1/x25519 + 1/p256_sign)   handshakes/s per core
#      a resumed one (psk_dhe_ke: ECDHE, no certificate signature)
#         resumed bound = x25519
#   3. Starts the server on CPU 0 (one worker, self-signed ECDSA P-256 dev
#      certificate, TLS on 127.0.0.1:PORT), then RUNS rounds of two runs of
#      `msock-bench --scenario storm` on CPU 1: full handshakes, then with
#      --resume (each reconnect offers the ticket of the slot's previous
#      connection). Each run: CONNS concurrent connect -> TLS -> WebSocket
#      upgrade -> close -> reconnect loops, unpaced, WARMUP s then a measured
#      window of DURATION s; the server's CPU time is sampled over the window
#      (--server-pid).
#   4. Prints every run's RESULT fields, then per kind the medians of
#      handshakes/s, server CPU-seconds per 1000 handshakes, the server's
#      capacity this implies (1000 / that: handshakes per server CPU-second),
#      client CPU and the resumed fraction, beside the bound.
#
# Reading it: on a 2-core machine the client needs about as much CPU per full
# handshake as the server (X25519 plus an ECDSA P-256 *verify*, slower than a
# sign), so the measured rate is often client-bound (client_cpu ~100%, marked
# CLIENT-BOUND); the server's cost per handshake, and the capacity derived
# from it, stay valid and are what to compare with the bound (target >= 70%).
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
	[ $((100 * ($1 - b0) / ($2 - t0 + 1))) -lt 10 ] && break
done

# 2. crypto bound, on the server's core. bssl-tool's filter is a substring
# of the test name, except that any filter containing "25519" runs the
# whole 25519 group (Ed25519 and Curve25519).
speed=$(taskset -c 0 timeout 60 bssl-tool speed -timeout 1 -filter 25519 2>&1;
	taskset -c 0 timeout 30 bssl-tool speed -timeout 1 -filter "ECDSA P-256" 2>&1)
ops() { echo "$speed" | grep -F "$1" | sed -nE 's/.*\(([0-9.]+) ops\/sec\).*/\1/p' | head -1; }
x_base=$(ops "Curve25519 base-point multiplication")
x_arb=$(ops "Curve25519 arbitrary point multiplication")
p256=$(ops "ECDSA P-256 signing")
if [ -z "$x_base" ] || [ -z "$x_arb" ] || [ -z "$p256" ]; then
	echo "storm.sh: could not parse bssl-tool speed output:" >&2
	echo "$speed" >&2
	exit 1
fi
echo "== crypto (bssl-tool speed, CPU 0): X25519 keygen $x_base/s, X25519 shared secret $x_arb/s, ECDSA P-256 sign $p256/s"

# 3. server on CPU 0, storms on CPU 1
taskset -c 0 "$server" --dev --diag --cores 1 --max-conns 20000 --log-level warn \
	--listen 127.0.0.1:$((port + 1)) --tls-listen 127.0.0.1:$port ${SERVER_ARGS:-} >"$srvlog" 2>&1 &
sp=$!
for _ in $(seq 50); do
	(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
	sleep 0.1
done
kill -0 "$sp" 2>/dev/null || { echo "storm.sh: server did not start:" >&2; cat "$srvlog" >&2; exit 1; }

ver=$([ "$tls12" = 1 ] && echo --tls12)
echo "== storm: $conns concurrent, ${warm}s warmup + ${dur}s window, $runs rounds; server: $server (CPU 0), client: $bench (CPU 1)"
for r in $(seq "$runs"); do
	for kind in full resumed; do
		res=$([ $kind = resumed ] && echo --resume)
		cmd="$bench --url wss://127.0.0.1:$port$path --scenario storm --conns $conns --warmup $warm --duration $dur --server-pid $sp --close-timeout 2 --quiet $ver $res"
		line=$(taskset -c 1 timeout $((warm + dur + 20)) $cmd 2>&1 | grep '^RESULT')
		[ $r = 1 ] && echo "   $kind: $cmd"
		if [ -z "$line" ]; then
			echo "$kind run $r: no RESULT (client failed or timed out)"
			continue
		fi
		echo "$kind $line" >>"$out"
		echo "$kind #$r $(echo "$line" | grep -oE '(rate|server_cpu_s|client_cpu_pct|resumed_pct|tls_full_p50_us|tls_res_p50_us|status)=[^ ]+' | tr '\n' ' ')"
	done
done
kill -0 "$sp" 2>/dev/null || { echo "storm.sh: the server died during the runs:" >&2; tail -5 "$srvlog" >&2; }

# 4. medians beside the bound
python3 - "$out" "$x_base" "$x_arb" "$p256" "$tls12" <<'PY'
import sys, statistics
path, xb, xa, sign, tls12 = sys.argv[1], *map(float, sys.argv[2:5]), sys.argv[5] == "1"
x25519 = 1 / (1 / xb + 1 / xa)
bound = {"full": 1 / (1 / x25519 + 1 / sign), "resumed": None if tls12 else x25519}
rows = {"full": [], "resumed": []}
for line in open(path):
    kind, _, *kv = line.split()
    rows[kind].append(dict(f.split("=", 1) for f in kv))
print("== medians (%s)" % ("TLS 1.2" if tls12 else "TLS 1.3"))
print("X25519 (keygen + shared secret) = %.0f/s; bound per core: full = 1/(1/x25519 + 1/p256_sign) = %.0f/s, "
      "resumed = %s" % (x25519, bound["full"], "n/a (TLS 1.2 ticket resumption: no ECDHE)" if tls12 else "x25519 = %.0f/s" % x25519))
for kind in ("full", "resumed"):
    r = rows[kind]
    if not r:
        print("%-8s no runs" % kind)
        continue
    med = lambda k: statistics.median(float(f[k]) for f in r)
    rate = med("rate")
    per1k = statistics.median(float(f["server_cpu_s"]) * 1000 / float(f["msgs"]) for f in r if float(f.get("msgs", 0)) > 0)
    cap = 1000 / per1k if per1k > 0 else 0
    cli = med("client_cpu_pct")
    ok = sum(f["status"] == "ok" for f in r)
    b = bound[kind]
    vs = lambda v: " = %.0f%% of bound" % (100 * v / b) if b else ""
    print("%-8s %6.0f handshakes/s%s | server %.3f cpu-s per 1000 handshakes -> %.0f handshakes per server cpu-s%s | "
          "client cpu %.0f%%%s | resumed %.1f%% | tls p50 %.0f us | runs ok %d/%d"
          % (kind, rate, vs(rate), per1k, cap, vs(cap), cli, " CLIENT-BOUND" if cli >= 95 else "",
             med("resumed_pct"), med("tls_full_p50_us" if kind == "full" else "tls_res_p50_us"), ok, len(r)))
PY
