#!/usr/bin/env bash
# fuzz.sh — run every Go fuzz target of marketd for N minutes each.
#
# Usage: ./fuzz.sh [minutes] [jobs]
#   minutes  how long to fuzz each target (default 10)
#   jobs     how many targets fuzz at once, one worker each (default 2,
#            for a 2-core machine; each `go test -fuzz` runs with -parallel 1)
#
# Targets are found by `func FuzzXxx(f *testing.F)` in the _test.go files;
# FUZZ_TARGETS="FuzzDecode FuzzClientOp" restricts the run to some of them.
# go test runs with -timeout 0: its default 10m would end a long fuzz run.
# Each target's log is kept in $FUZZ_LOG_DIR (default /tmp/marketd-fuzz).
# A failing input is written by go test to <pkg>/testdata/fuzz/<Target>/
# and runs as a seed in the normal suite from then on: commit it with the fix.
#
# Prints one summary line per target (execs, new interesting inputs, crashes)
# and exits 1 if any target found a crash or did not run.
set -u
cd "$(dirname "$0")"

minutes=${1:-10}
jobs=${2:-2}
logdir=${FUZZ_LOG_DIR:-/tmp/marketd-fuzz}
mkdir -p "$logdir"

# pkg<TAB>target for every fuzz target.
mapfile -t targets < <(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . |
	sed -E 's#^\./(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+).*#./\1\t\2#' | sort -u)
if [[ -n ${FUZZ_TARGETS:-} ]]; then
	mapfile -t targets < <(printf '%s\n' "${targets[@]}" | grep -Ew "$(echo "$FUZZ_TARGETS" | tr ' ' '|')")
fi
if ((${#targets[@]} == 0)); then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${minutes}m each, $jobs at a time; logs in $logdir"

# summarize prints the summary line of one target from its log.
summarize() {
	local pkg=$1 name=$2 log=$3 rc=$4
	local last execs interesting elapsed crashes input
	last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -1)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	elapsed=$(sed -nE 's/^fuzz: elapsed: ([0-9hms]+),.*/\1/p' <<<"$last")
	interesting=$(sed -nE 's/.*new interesting: ([0-9]+ \(total: [0-9]+\)).*/\1/p' <<<"$last")
	if [[ -z $elapsed ]]; then
		# Failed before the first progress line: the test's own time.
		elapsed=$(sed -nE "s/^--- FAIL: $name \(([0-9.]+s)\).*/\1/p" "$log" | head -1)
	fi
	input=$(sed -nE 's/.*Failing input written to (.*)$/\1/p' "$log" | tail -1)
	crashes=0
	if [[ -n $input ]]; then
		crashes=1
	fi
	local status=ok
	if ((rc != 0)); then
		status=FAIL
	fi
	printf '%-4s %-10s %-22s execs %-12s in %-8s new interesting %-18s crashes %d%s\n' \
		"$status" "$pkg" "$name" "${execs:-0}" "${elapsed:-0s}" "${interesting:-0}" "$crashes" \
		"${input:+ (input $pkg/$input)}"
}

# logname names the log file of a target.
logname() {
	local pkg=${1#./}
	echo "${pkg//\//_}.$2.log"
}

run() {
	local pkg=$1 name=$2
	local log="$logdir/$(logname "$pkg" "$name")"
	go test "$pkg" -timeout 0 -run '^$' -fuzz "^${name}\$" -fuzztime "${minutes}m" -parallel 1 >"$log" 2>&1
	local rc=$?
	summarize "$pkg" "$name" "$log" "$rc" >"$log.summary"
	cat "$log.summary"
	return "$rc"
}

failed=0
running=0
for t in "${targets[@]}"; do
	IFS=$'\t' read -r pkg name <<<"$t"
	if ((running >= jobs)); then
		wait -n || failed=1
		running=$((running - 1))
	fi
	run "$pkg" "$name" &
	running=$((running + 1))
done
while ((running > 0)); do
	wait -n || failed=1
	running=$((running - 1))
done

echo "fuzz.sh: summary"
for t in "${targets[@]}"; do
	IFS=$'\t' read -r pkg name <<<"$t"
	cat "$logdir/$(logname "$pkg" "$name").summary"
done
exit "$failed"
