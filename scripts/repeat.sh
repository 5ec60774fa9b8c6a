#!/usr/bin/env bash
# Run the test suite N times in a row and stop at the first run that fails.
#
#   scripts/repeat.sh N [pytest args]     e.g.  scripts/repeat.sh 20
#                                               scripts/repeat.sh 50 tests/test_ringbuf.py -x
#
# Without pytest args it runs the whole suite (pyproject's testpaths). Each run prints one
# line: its number, passed/skipped/failed counts and seconds. Every run's full output is
# kept in a log directory (printed first); a failing run's tail is printed and its status
# is the script's exit status. Runs from the checkout it lives in, with PYTHONPATH set to
# it, so a worktree tests its own code. A run still going after PYBPF_REPEAT_TIMEOUT
# seconds (default 7200) is a hang: it is stopped and counts as a failure (pytest's
# faulthandler_timeout has printed the stuck test's stacks into its log by then).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 N [pytest args]   (N >= 1 runs, stops at the first failure)" >&2
    exit 2
fi
runs=$1
shift
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
logs=$(mktemp -d "${TMPDIR:-/tmp}/pybpf-repeat-XXXXXX")
echo "repeat: $runs runs of: python3 -m pytest -q ${*@Q}   (logs in $logs)"

count() {  # count WORD LOG: the number before WORD on pytest's summary line (0 if absent)
    local n
    n=$(tail -n 1 "$2" | grep -oE "[0-9]+ $1" | grep -oE "^[0-9]+")
    echo "${n:-0}"
}

total=0
for ((i = 1; i <= runs; i++)); do
    log="$logs/run-$i.log"
    start=$(date +%s.%N)
    timeout --kill-after=30 "${PYBPF_REPEAT_TIMEOUT:-7200}" python3 -m pytest -q "$@" \
        >"$log" 2>&1
    status=$?
    ((status == 124)) && echo "repeat: run $i still going after ${PYBPF_REPEAT_TIMEOUT:-7200} s" \
        "(a hang): stopped" >>"$log"
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
    total=$((total + ${secs%.*}))
    failed=$(($(count failed "$log") + $(count error "$log") + $(count errors "$log")))
    printf 'run %d/%d: %d passed, %d skipped, %d failed, %s s\n' "$i" "$runs" \
        "$(count passed "$log")" "$(count skipped "$log")" "$failed" "$secs"
    if ((status != 0)); then
        echo "repeat: run $i failed (pytest status $status); its summary:"
        if grep -q "short test summary info" "$log"; then
            sed -n '/short test summary info/,$p' "$log" | tail -n 40
        else
            tail -n 40 "$log"
        fi
        exit "$status"
    fi
done
echo "repeat: all $runs runs passed in $total s"
