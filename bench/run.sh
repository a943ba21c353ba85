#!/usr/bin/env bash
# run.sh regenerates every end-to-end benchmark figure of docs/benchmarks.md:
# results in bench/results/*.json, plots in docs/img/*.svg, and the
# generated block of docs/benchmarks.md. It takes about ten minutes on the
# 2-core machine (every scenario twice, the less disturbed run kept) and
# needs taskset (util-linux). It measures the binaries of the last commit
# (-rev HEAD), whatever is being edited; -rev '' measures the work tree.
# Arguments go to the suite, e.g. bench/run.sh -only sat-1k -targets marketd
set -euo pipefail
cd "$(dirname "$0")/.."
# 10,000 clients need 10,000+ descriptors on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 11000 ]; then
  echo "run.sh: open-file limit $(ulimit -n) is below 11000: the 10k scenarios may fail" >&2
fi
exec go run ./bench/cmd/suite -rev HEAD -repeat 2 -window 6s "$@"
