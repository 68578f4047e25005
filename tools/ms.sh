#!/usr/bin/env bash
# mezon-sock: install dependencies (Debian 12 packages), build, run, test.
#
#   tools/ms.sh run  [server flags]   install, build, start the server (dev mode)
#   tools/ms.sh test                  install, build, run the whole test suite
#   tools/ms.sh deps | build          the first steps alone
#
# Idempotent: packages are installed only when missing; builds are
# incremental. Needs root (or sudo) only to install packages.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
JOBS=$(nproc 2>/dev/null || echo 2)

PKGS=(build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
      liburing-dev android-libboringssl-dev android-boringssl libmimalloc-dev
      libck-dev libcmocka-dev libnuma-dev python3 python3-websockets
      iproute2 util-linux procps curl gnuplot-nox systemd valgrind)

log() { printf '== %s\n' "$*" >&2; }

deps() {
	local missing=()
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
			|| missing+=("$p")
	done
	# node's `ws` interop test needs node + npm; the machine image may ship
	# its own node (with npm inside), which Debian's npm package conflicts with.
	command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
	if ((${#missing[@]})); then
		log "installing: ${missing[*]}"
		local SUDO=""
		[ "$(id -u)" -eq 0 ] || SUDO=sudo
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends "${missing[@]}" >/dev/null
	fi
}

# build DIR [cmake args...]
build() {
	local dir=$1; shift
	cmake -S "$ROOT" -B "$ROOT/$dir" -G Ninja -DMS_WERROR=ON "$@" >/dev/null
	cmake --build "$ROOT/$dir" -j "$JOBS"
}

cmd_run() {
	deps
	build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	log "starting build/mezon-sock --dev $*  (Ctrl-C stops it)"
	exec "$ROOT/build/mezon-sock" --dev "$@"
}

# suite DIR COMMAND...: run a ctest command in DIR. A skipped test counts
# as a failure: the CI machine has every feature the tests use, so a skip
# there hides something (libFuzzer once reported a finding as exit 77).
suite() {
	local dir=$1 out rc
	shift
	out=$(mktemp)
	(cd "$dir" && "$@") 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if grep -q '\*\*\*Skipped' "$out"; then
		log "a test was skipped in $dir: counted as a failure"
		rc=1
	fi
	rm -f "$out"
	return "$rc"
}

cmd_test() {
	deps
	local t0=$SECONDS fails=0 suites=3
	log "release build (-Wall -Wextra -Werror), unit + integration tests"
	build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	suite build ctest --output-on-failure -j 2 -L 'unit|integration' --timeout 600 || fails=$((fails + 1))
	log "ASan+UBSan build: unit + integration tests"
	build build-asan -DCMAKE_BUILD_TYPE=Asan
	suite build-asan env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -L 'unit|integration' -LE 'scale' --timeout 600 || fails=$((fails + 1))
	log "TSan build: cross-core tests"
	build build-tsan -DCMAKE_BUILD_TYPE=Tsan
	suite build-tsan ctest --output-on-failure -L tsan --timeout 600 || fails=$((fails + 1))
	if [ -f tests/fuzz/CMakeLists.txt ]; then
		suites=$((suites + 1))
		log "fuzz targets (clang + libFuzzer), bounded runs"
		build build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DMS_FUZZ=ON
		suite build-fuzz ctest --output-on-failure -L fuzz --timeout 600 || fails=$((fails + 1))
	fi
	log "test suites done in $((SECONDS - t0)) s"
	echo "suites: $((suites - fails)) passed, $fails failed"
	[ "$fails" -eq 0 ]
}

case "${1:-}" in
run) shift; cmd_run "$@" ;;
test) shift; cmd_test "$@" ;;
deps) deps ;;
build) deps; build build ;;
*) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
