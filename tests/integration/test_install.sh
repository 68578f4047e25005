#!/bin/bash
# `cmake --install` into a temporary prefix: the binary, the systemd unit
# template, the example configuration and the man page land where they
# should and work. With "verify": systemd-analyze verify on the installed
# unit (exit 77 when the host has no systemd-analyze).
#
# Usage: test_install.sh CMAKE BUILD_DIR SOURCE_DIR VERSION BINDIR [verify]
set -u
CMAKE=$1 BUILD=$2 SRC=$3 VERSION=$4 BINDIR=$5 MODE=${6:-files}
if [ "$MODE" = verify ] && ! command -v systemd-analyze >/dev/null; then
	echo "no systemd-analyze on this host"
	exit 77
fi
P=$(mktemp -d /tmp/ms-test-install-XXXXXX)
trap 'rm -rf "$P"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

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
echo "$fails failed"
[ "$fails" -eq 0 ]
