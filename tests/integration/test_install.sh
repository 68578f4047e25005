#!/bin/bash
# `cmake --install` into a temporary prefix: the binary, the systemd unit
# template, the example configuration and the man page land where they
# should and work, and the installed unit starts with its example config
# and serves. With "verify": systemd-analyze verify on the installed unit
# (exit 77 when the host has no systemd-analyze).
#
# Usage: test_install.sh CMAKE BUILD_DIR SOURCE_DIR VERSION BINDIR [verify]
# (mode "unit PREFIX" is this script calling itself in a private network
# namespace: start the unit installed in PREFIX.)
set -u
CMAKE=$1 BUILD=$2 SRC=$3 VERSION=$4 BINDIR=$5 MODE=${6:-files}

# start_unit PREFIX [FLAGS...]: run the ExecStart line of the unit installed
# in PREFIX as systemd would for mezon-sock@0, and check that it serves.
#
# Why not systemctl: our test hosts are containers without systemd as PID
# 1 (`systemctl is-system-running` says "offline", /run/systemd/system is
# absent), so no unit can be started there; and where systemd runs,
# starting this one would mean installing it and /etc/mezon-sock on the
# host. So the line runs directly, given what systemd would give it: %i = 0
# (instance = NUMA node 0), %d = a credentials directory holding
# jwt-secret (the unit's LoadCredential=), the installed example as
# /etc/mezon-sock/mezon-sock.conf, the staged binary for $BINDIR/mezon-sock.
# Not reproduced: the dynamic user and the sandboxing (systemd-analyze
# verify checks those directives). FLAGS go after the line (they win over
# the config file): the caller moves the example's fixed ports when it
# cannot run this in a private network namespace.
start_unit() {
	local P=$1 line arg plain admin rc
	shift
	local UNIT=$P/lib/systemd/system/mezon-sock@.service LOG=$P/unit.log
	mkdir -p "$P/etc" "$P/creds"
	cp "$P/share/doc/mezon-sock/mezon-sock.conf.example" "$P/etc/mezon-sock.conf"
	# As README's set-up makes it: 32 random bytes in base64 (44 bytes).
	head -c 32 /dev/urandom | base64 >"$P/creds/jwt-secret"
	grep -q '^LoadCredential=jwt-secret:/etc/mezon-sock/jwt-secret$' "$UNIT" \
		|| { fail "unit: no LoadCredential=jwt-secret"; return; }
	line=$(sed -n 's/^ExecStart=//p' "$UNIT")
	line=${line//$BINDIR\/mezon-sock/$P/bin/mezon-sock}
	line=${line//\/etc\/mezon-sock\/mezon-sock.conf/$P/etc/mezon-sock.conf}
	line=${line//%i/0}
	line=${line//%d/$P/creds}
	case $line in *%*) fail "unit ExecStart has a specifier this test does not fill: $line"; return ;; esac
	read -r -a argv <<<"$line"
	"${argv[@]}" "$@" 2>"$LOG" &
	local pid=$!
	plain= admin=
	for _ in $(seq 100); do
		plain=$(sed -n -E 's#.*listening on ws://127\.0\.0\.1:([0-9]+)/ws.*#\1#p' "$LOG")
		admin=$(sed -n -E 's#.*admin on http://127\.0\.0\.1:([0-9]+)/metrics.*#\1#p' "$LOG")
		[ -n "$plain" ] && [ -n "$admin" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$plain" ] || [ -z "$admin" ]; then
		kill -KILL "$pid" 2>/dev/null
		wait "$pid"
		fail "the unit's ExecStart with the example config did not start: $(cat "$LOG")"
		return
	fi
	ok "unit started: ${argv[*]} $*"
	grep -q "wss://" "$LOG" && fail "example config serves TLS without a certificate"
	grep -q "DEVELOPMENT MODE\| error " "$LOG" && fail "unit log: $(cat "$LOG")"
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$plain/healthz")
	[ "$code" = 200 ] && ok "unit: /healthz 200" || fail "unit: /healthz '$code'"
	curl -s --max-time 5 "http://127.0.0.1:$admin/metrics" | grep -q '^mezon_workers ' \
		&& ok "unit: admin /metrics" || fail "unit: admin /metrics"
	# /ws: 401 without a token, 101 with one signed by the credential.
	out=$(/usr/bin/python3 - "$plain" "$P/creds/jwt-secret" <<'PY'
import base64, hashlib, hmac, json, socket, sys, time
port, key = int(sys.argv[1]), open(sys.argv[2], "rb").read().rstrip(b"\n")
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
msg = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps({"sub": "42", "exp": int(time.time()) + 60}).encode())
tok = (msg + b"." + b64(hmac.new(key, msg, hashlib.sha256).digest())).decode()
for q in ("", "?token=" + tok):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET /ws%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % q).encode())
    print(s.recv(64).split(b" ")[1].decode(), end=" ")
    s.close()
PY
)
	[ "$out" = "401 101 " ] && ok "unit: /ws 401 without a token, 101 with one" || fail "unit: /ws answered '$out'"
	kill -TERM "$pid"
	wait "$pid"
	rc=$?
	[ "$rc" -eq 0 ] && ok "unit: SIGTERM -> exit 0" || fail "unit: SIGTERM -> exit $rc: $(tail -5 "$LOG")"
	# The example's tls-listen = off is what lets it start: with the
	# default listener and no certificate the server refuses, saying why.
	sed -i '/^tls-listen = off$/d' "$P/etc/mezon-sock.conf"
	"${argv[@]}" "$@" >/dev/null 2>"$LOG"
	rc=$?
	[ "$rc" -eq 2 ] && grep -q -- "without a certificate: give --cert FILE --key FILE, or --tls-listen off" "$LOG" \
		&& ok "without tls-listen = off: refused ($(cat "$LOG"))" || fail "without tls-listen = off: exit $rc: $(cat "$LOG")"
}

fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

if [ "$MODE" = unit ]; then
	start_unit "$7"
	echo "$fails failed"
	[ "$fails" -eq 0 ]
	exit
fi
if [ "$MODE" = verify ] && ! command -v systemd-analyze >/dev/null; then
	echo "no systemd-analyze on this host"
	exit 77
fi
P=$(mktemp -d /tmp/ms-test-install-XXXXXX)
trap 'rm -rf "$P"' EXIT

"$CMAKE" --install "$BUILD" --prefix "$P" >"$P.log" 2>&1 || { cat "$P.log"; rm -f "$P.log"; exit 1; }
rm -f "$P.log"
UNIT=$P/lib/systemd/system/mezon-sock@.service
for f in bin/mezon-sock lib/systemd/system/mezon-sock@.service \
	share/doc/mezon-sock/mezon-sock.conf.example share/man/man1/mezon-sock.1; do
	[ -s "$P/$f" ] && ok "installed $f" || fail "missing $f"
done

if [ "$MODE" = verify ]; then
	# The unit names $BINDIR/mezon-sock; point it at the staged copy, and
	# let Documentation=man:mezon-sock(1) find the staged man page.
	mkdir -p "$P/units"
	sed "s#^ExecStart=$BINDIR/mezon-sock#ExecStart=$P/bin/mezon-sock#" "$UNIT" >"$P/units/mezon-sock@.service"
	out=$(cd "$P/units" && MANPATH="$P/share/man" systemd-analyze verify ./mezon-sock@0.service 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
		ok "systemd-analyze verify mezon-sock@0.service: clean"
	else
		fail "systemd-analyze verify: exit $rc: $out"
	fi
	echo "$fails failed"
	[ "$fails" -eq 0 ]
	exit
fi

out=$("$P/bin/mezon-sock" --version)
[ "$out" = "mezon-sock $VERSION" ] && ok "installed binary: $out" || fail "installed --version: '$out'"
grep -q "^ExecStart=$BINDIR/mezon-sock --config /etc/mezon-sock/mezon-sock.conf --numa-node %i" "$UNIT" \
	&& ok "unit runs $BINDIR/mezon-sock --numa-node %i" || fail "unit ExecStart: $(grep ExecStart "$UNIT")"
cmp -s "$P/share/doc/mezon-sock/mezon-sock.conf.example" "$SRC/tools/systemd/mezon-sock.conf.example" \
	&& ok "example config" || fail "example config differs from the source"
# The example parses back (every line commented: the defaults).
"$P/bin/mezon-sock" --config "$P/share/doc/mezon-sock/mezon-sock.conf.example" --print-config \
	| cmp -s - "$SRC/tools/systemd/mezon-sock.conf.example" && ok "example config parses" \
	|| fail "example config does not parse back to itself"
MAN=$P/share/man/man1/mezon-sock.1
head -1 "$MAN" | grep -q "^\.TH MEZON-SOCK 1 .*mezon-sock $VERSION" && ok "man page header" || fail "man page header: $(head -1 "$MAN")"
# Every flag of --help is in the man page.
for flag in $("$P/bin/mezon-sock" --help | sed -n -E 's/^  (--[a-z-]+).*/\1/p'); do
	esc=$(printf '%s' "$flag" | sed 's/-/\\\\-/g')
	grep -q "^\\\\fB$esc\\\\fR" "$MAN" || fail "man page lacks $flag"
done
n=$(grep -c '^\.TP' "$MAN")
[ "$n" -ge 35 ] && ok "man page: $n entries" || fail "man page: $n entries"
if command -v man >/dev/null; then
	MANPATH="$P/share/man" man -P cat mezon-sock 2>/dev/null | grep -q -- "--numa-node N" \
		&& ok "man mezon-sock renders" || fail "man mezon-sock does not render"
fi
# The installed unit with its example config, in a private network
# namespace when one can be made (the example's ports 8080 and 9090 are
# fixed, and other tests run side by side); else on free ports.
if unshare -rn sh -c 'ip link set lo up' 2>/dev/null; then
	unshare -rn bash -c 'ip link set lo up && exec bash "$@"' _ "$0" "$CMAKE" "$BUILD" "$SRC" \
		"$VERSION" "$BINDIR" unit "$P" || fails=$((fails + 1))
else
	echo "no private network namespace here: the unit runs on free ports"
	start_unit "$P" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
fi
echo "$fails failed"
[ "$fails" -eq 0 ]
