#!/bin/bash
# Operating the server: exit status 2 and one stderr line for every kind of
# bad flag, --version, --config with a real file (the server starts, the
# flags win, /healthz answers 200), --numa-node 0 pins every worker to its
# own CPU of node 0 and binds its memory there, --log-level applies, the
# start-up refusals of short secrets and of TLS without a certificate, and
# the shipped example config is what --tls-listen off --print-config prints.
#
# Usage: test_ops.sh SERVER_BINARY SOURCE_DIR VERSION
set -u
BIN=$1
SRC=$2
VERSION=$3
TMP=$(mktemp -d /tmp/ms-test-ops-XXXXXX)
PID=
fails=0
cleanup() {
	[ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}
ok() { echo "ok: $*"; }

# expect_bad WANT_SUBSTRING ARGS...: exit 2, exactly one stderr line holding WANT.
expect_bad() {
	local want=$1
	shift
	"$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
	local rc=$? n
	n=$(wc -l <"$TMP/err")
	if [ "$rc" -ne 2 ] || [ "$n" -ne 1 ] || ! grep -qF -- "$want" "$TMP/err" || [ -s "$TMP/out" ]; then
		fail "$* -> exit $rc, $n stderr lines: $(cat "$TMP/err")"
	else
		ok "$* -> 2: $(cat "$TMP/err")"
	fi
}

long=$(printf 'a%.0s' $(seq 300))
printf 'cores = 2\nmax-conns = 0\n' >"$TMP/bad.conf"
expect_bad "unknown flag '--nope'" --dev --nope
expect_bad "--cores needs a value" --dev --cores
expect_bad "--cores 65: expected an integer in 0..64" --dev --cores 65
expect_bad "--max-conns x: expected an integer" --dev --max-conns x
expect_bad "--taskrun sqpoll: expected one of defer, coop" --dev --taskrun sqpoll
expect_bad "--listen 1.2.3.4: expected HOST:PORT" --dev --listen 1.2.3.4
expect_bad "--cert aaaa" --dev --cert "$long" --key k
expect_bad "--dev takes no value" --dev=yes
expect_bad "unexpected argument 'stray'" --dev stray
expect_bad "--numa-node 99: no such NUMA node (nodes: 0" --dev --numa-node 99
expect_bad "--numa-node -5: expected an integer in -1..1023" --dev --numa-node -5
expect_bad "--cpus 1000: no usable CPU" --dev --cpus 1000
expect_bad "$TMP/bad.conf:2: max-conns 0: expected an integer in 1..4194304" --dev --config "$TMP/bad.conf"
expect_bad "--config $TMP/none.conf: No such file" --dev --config "$TMP/none.conf"
expect_bad "refusing to start without authentication" --listen 127.0.0.1:0
# Outside --dev: a TLS listener needs a certificate, HS256 secrets >= 32
# bytes, API keys >= 16; the API key never equals a JWT secret.
s32=0123456789abcdef0123456789abcdef
printf '%s\n' "$s32" >"$TMP/jwt32"
printf '0123456789abcde\n' >"$TMP/api15"
expect_bad "--tls-listen 127.0.0.1:8443 without a certificate: give --cert FILE --key FILE, or --tls-listen off" \
	--listen 127.0.0.1:0 --secret-file "$TMP/jwt32"
expect_bad "--secret: 31 bytes; an HS256 secret needs at least 32" --tls-listen off --secret "${s32:1}"
expect_bad "--secret-file $TMP/api15: 15 bytes; an HS256 secret needs at least 32" --tls-listen off \
	--secret-file "$TMP/api15"
expect_bad "--api-key-file $TMP/api15: 15 bytes; the server API key needs at least 16" --tls-listen off \
	--secret-file "$TMP/jwt32" --api-key-file "$TMP/api15"
expect_bad "--api-key-file $TMP/jwt32 holds the same bytes as --secret-file $TMP/jwt32" --dev \
	--secret-file "$TMP/jwt32" --api-key-file "$TMP/jwt32"

out=$("$BIN" --version 2>&1)
rc=$?
[ "$rc" -eq 0 ] && [ "$out" = "mezon-sock $VERSION" ] && ok "--version: $out" || fail "--version: exit $rc, '$out'"
"$BIN" --help >"$TMP/help" 2>&1 && grep -q -- "--numa-node N" "$TMP/help" && ok "--help" || fail "--help"
# The example is the defaults but for TLS, off until a certificate is
# configured (outside --dev a TLS listener needs one).
if "$BIN" --tls-listen off --print-config | diff -u "$SRC/tools/systemd/mezon-sock.conf.example" - >"$TMP/diff"; then
	ok "tools/systemd/mezon-sock.conf.example is --tls-listen off --print-config's output"
else
	fail "mezon-sock.conf.example is stale (regenerate: mezon-sock --tls-listen off --print-config): $(cat "$TMP/diff")"
fi

# start LOG ARGS...: the server in the background; sets PID and PORT.
start() {
	local log=$1
	shift
	"$BIN" "$@" 2>"$log" &
	PID=$!
	PORT=
	for _ in $(seq 200); do
		PORT=$(sed -n -E 's#.*listening on ws://127\.0\.0\.1:([0-9]+)/ws.*#\1#p' "$log")
		[ -n "$PORT" ] && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	fail "server did not start: $(cat "$log")"
	return 1
}

# stop: SIGTERM, expect exit 0.
stop() {
	kill -TERM "$PID"
	wait "$PID"
	local rc=$?
	PID=
	[ "$rc" -eq 0 ] && ok "SIGTERM -> exit 0" || fail "SIGTERM -> exit $rc"
}

# --config: the file says 2 workers and --log-level warn would hide the
# listening line, so the command line's --cores 1 and --log-level info win.
cat >"$TMP/ms.conf" <<EOF
# test configuration
listen = 127.0.0.1:0
tls-listen off
dev
cores = 2
log-level = warn
max-conns = 1000
EOF
if start "$TMP/log1" --cores 1 --config "$TMP/ms.conf" --log-level info; then
	grep -q "with 1 workers" "$TMP/log1" && ok "flag --cores 1 wins over the file's cores = 2" \
		|| fail "--cores 1 did not win: $(grep listening "$TMP/log1")"
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/healthz")
	[ "$code" = 200 ] && ok "/healthz with --config: 200" || fail "/healthz: '$code'"
	stop
fi

# --log-level warn from the file, no flag over it: warnings only.
"$BIN" --config "$TMP/ms.conf" >"$TMP/out" 2>"$TMP/log3" &
PID=$!
sleep 1
kill -TERM "$PID"
wait "$PID"
rc=$?
PID=
if [ "$rc" -eq 0 ] && ! grep -q " info " "$TMP/log3" && grep -q "DEVELOPMENT MODE" "$TMP/log3"; then
	ok "log-level = warn: warnings only"
else
	fail "log-level = warn: exit $rc, log: $(cat "$TMP/log3")"
fi

# --numa-node 0: each worker thread on its own CPU of node 0, memory bound
# to node 0 (numa_maps shows the reading thread's policy: bind:0).
node_cpus=$(cat /sys/devices/system/node/node0/cpulist 2>/dev/null || echo "")
if start "$TMP/log4" --dev --listen 127.0.0.1:0 --tls-listen off --numa-node 0 --max-conns 1000; then
	n=$(grep -c "NUMA: " "$TMP/log4")
	[ "$n" -eq 1 ] && ok "one NUMA line: $(grep -o 'NUMA: .*' "$TMP/log4")" || fail "$n NUMA lines"
	grep -q "memory bound to node 0" "$TMP/log4" || fail "NUMA line does not say bound"
	workers=$(sed -n -E 's#.*with ([0-9]+) workers.*#\1#p' "$TMP/log4")
	seen=""
	count=0
	for t in /proc/$PID/task/*; do
		name=$(cat "$t/comm")
		case $name in w[0-9]*) ;; *) continue ;; esac
		count=$((count + 1))
		cpus=$(sed -n -E 's/^Cpus_allowed_list:\s*//p' "$t/status")
		policy=$(head -1 "$t/numa_maps" | awk '{print $2}')
		case $cpus in *[,-]*) fail "$name allowed on $cpus, not one CPU" ;; esac
		case " $seen " in *" $cpus "*) fail "$name shares CPU $cpus" ;; esac
		seen="$seen $cpus"
		[ "$policy" = "bind:0" ] || fail "$name memory policy '$policy', want bind:0"
		ok "$name: CPU $cpus, memory $policy"
	done
	[ "$count" -eq "$workers" ] && [ "$count" -gt 0 ] || fail "$count worker threads, log says $workers"
	want=$(/usr/bin/python3 -c "import os, sys
s = set()
for p in sys.argv[1].split(','):
    a, _, b = p.partition('-')
    s.update(range(int(a), int(b or a) + 1))
print(min(64, len(s & os.sched_getaffinity(0))))" "$node_cpus")
	[ "$workers" = "$want" ] && ok "--cores defaults to node 0's $want usable CPUs" \
		|| fail "$workers workers, node 0 has $want CPUs ($node_cpus)"
	stop
fi

echo "$fails failed"
[ "$fails" -eq 0 ]
