# Shared by the benchmark scripts (sourced). summarize FILE: per label,
# median rate, spread, median server CPU-seconds per million, valid runs.
summarize() {
	python3 - "$1" "${2:-1}" <<'PY'
import sys, statistics, collections
scale = float(sys.argv[2])
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) < 2 or "=" not in p[1]:
        continue
    rows[p[0]].append(dict(kv.split("=", 1) for kv in p[1:]))
for k in sorted(rows):
    r = sorted(float(f["rate"]) for f in rows[k])
    c = statistics.median(float(f["cpu_s_per_M"]) for f in rows[k])
    v = sum(f["valid"] == "yes" for f in rows[k])
    print("%-24s median=%.0f spread=%.0f..%.0f server_cpu_s_per_M=%.2f valid=%d/%d" % (
        k, statistics.median(r) * scale, r[0] * scale, r[-1] * scale, c / scale, v, len(r)))
PY
}

# record TITLE COMMAND TEXT: with RECORD=1, append a dated row block to
# docs/BENCHMARKS.md (section "Recorded runs") with the exact command.
record() {
	[ "${RECORD:-0}" = 1 ] || return 0
	local f=docs/BENCHMARKS.md
	grep -q '^## Recorded runs' "$f" || printf '\n## Recorded runs\n\nAppended by `RECORD=1 tools/bench/*.sh`.\n' >>"$f"
	{
		printf '\n### %s — %s\n\n`%s`\n\n```\n%s\n```\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$1" "$2" "$3"
	} >>"$f"
}
