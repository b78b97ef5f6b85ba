#!/usr/bin/env bash
# Fuzz the decoder for SECONDS of wall time in total (default 600), on one core.
# libFuzzer stops at its first finding: the finding is saved under OUT/artifacts/ and fuzzing
# restarts (with the grown corpus in OUT/corpus) until the time is spent. A summary line per
# session goes to OUT/sessions.log.
#   usage: tests/fuzz/run.sh [SECONDS] [OUT] [SEED_DIR]
set -u
SECONDS_TOTAL=${1:-600}
OUT=${2:-fuzz-out}
SEEDS=${3:-../shared/data/odd-jpegs}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/corpus" "$OUT/artifacts"
[ -d "$SEEDS" ] || { echo "seed corpus $SEEDS not found: fuzzing from $OUT/corpus only" >&2; SEEDS=; }
end=$(( $(date +%s) + SECONDS_TOTAL ))
session=0
while :; do
  left=$(( end - $(date +%s) ))
  [ "$left" -gt 5 ] || break
  session=$((session + 1))
  start=$(date +%s)
  # -timeout: an input slower than 10 s is a hang; -rss_limit_mb: memory growth is a finding.
  "$PY" "$HERE/fuzz_decoder.py" "$OUT/corpus" $SEEDS -max_total_time="$left" -timeout=10 \
      -rss_limit_mb=2048 -max_len=1048576 -artifact_prefix="$OUT/artifacts/" -print_final_stats=1 \
      >"$OUT/session-$session.log" 2>&1
  rc=$?
  echo "session $session: rc=$rc $(( $(date +%s) - start ))s $(grep -E '^stat::number_of_executed_units' "$OUT/session-$session.log" | tail -1)" >>"$OUT/sessions.log"
  [ "$rc" -eq 0 ] && break   # time spent without a finding
  if [ $(( $(date +%s) - start )) -lt 5 ] && ! grep -q "Test unit written to" "$OUT/session-$session.log"; then
    echo "libFuzzer stopped at once without a finding (rc=$rc): see $OUT/session-$session.log" >&2
    exit 1
  fi
done
echo "fuzzed $SECONDS_TOTAL s in $session session(s); findings: $(ls "$OUT/artifacts" | wc -l) (see $OUT/artifacts, $OUT/sessions.log)"
