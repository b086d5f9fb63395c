#!/usr/bin/env bash
# The whole Debian experiment behind results/debian (docs/results.md, the paper's methods):
# data at three training fractions, tuning on validation, the MI-normalisation check, then the
# final runs on test, short fractions first. Every step resumes where it stopped (and skips what
# the committed JSON Lines already record), so run it again after any interruption.
#
#   bash scripts/debian_experiments.sh             # one step after the other: about 20 hours on
#                                                  # 2 cores from nothing (an estimate)
#   bash scripts/debian_experiments.sh --parallel  # the final runs of 0.01 and 0.1 beside the
#                                                  # tuning, each as soon as its flagfile exists;
#                                                  # then the rest on two workers
#
# --parallel runs two training processes at once, sharing the cores; the tuning logs to
# runs/debian/tune.log meanwhile.
set -euo pipefail
PY="${PY:-.venv/bin/python}"
PARALLEL=0
PASS_PAUSE="${PASS_PAUSE:-120}"  # seconds between passes of --parallel
case "${1:-}" in
  --parallel) PARALLEL=1 ;;
  "") ;;
  *) echo "usage: $0 [--parallel]" >&2; exit 2 ;;
esac

stage() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
finals() { "$PY" -m ssl_retrieval.experiments --config=configs/experiments/debian.json "$@"; }

if [ ! -f runs/debian/raw/schema.json ]; then
  stage "raw data from this machine's Debian package index"
  "$PY" -m ssl_retrieval.sources --source=debian --output_dir=runs/debian/raw
fi
for fraction in 1.0 0.1 0.01; do
  out=runs/debian/data
  [ "$fraction" = 1.0 ] || out="runs/debian/data_$fraction"
  if [ ! -f "$out/schema.json" ]; then
    stage "preprocessing, training fraction $fraction -> $out"
    "$PY" -m pipelines.preprocess --items='runs/debian/raw/items*.jsonl' \
      --pairs='runs/debian/raw/pairs*.jsonl' --schema=runs/debian/raw/schema.json \
      --train_fraction="$fraction" --output_dir="$out"
  fi
done

if [ "$PARALLEL" = 1 ]; then
  stage "tuning every method on validation, in the background (runs/debian/tune.log)"
  # Its own process group (setsid), so that stopping this script (Ctrl-C, or a failed pass)
  # stops the tuning and the training run it started too.
  setsid "$PY" -m ssl_retrieval.tune --config=configs/tuning/debian.json >>runs/debian/tune.log 2>&1 &
  tune=$!
  trap 'kill -- -"$tune" 2>/dev/null || true' EXIT
  trap 'exit 130' INT TERM
  # A pass trains every final run at 0.01 and 0.1 whose tuned flagfile exists and skips the
  # others; passes repeat until the tuning ends, so each run starts once its flagfile is written.
  while kill -0 "$tune" 2>/dev/null; do
    stage "final runs at fractions 0.01 and 0.1 whose flagfiles exist (results/debian)"
    finals --fractions=0.01,0.1
    sleep "$PASS_PAUSE"
  done
  trap - EXIT INT TERM
  wait "$tune" || { echo "tuning failed: see runs/debian/tune.log" >&2; exit 1; }
else
  stage "tuning every method on validation (results/debian/tuning)"
  "$PY" -m ssl_retrieval.tune --config=configs/tuning/debian.json
fi
stage "final runs at fractions 0.01 and 0.1 (results/debian)"
finals --fractions=0.01,0.1
stage "CFM's MI normalisation on validation (results/debian/mi_normalization)"
"$PY" -m ssl_retrieval.tune --config=configs/tuning/debian_mi.json
stage "final runs at fraction 1.0, and the report"
if [ "$PARALLEL" = 1 ]; then
  # Two workers on one config: each trains the runs the other has not claimed
  # (ssl_retrieval/experimentation/workers.py). The second logs to runs/debian/worker2.log, in
  # its own process group, stopped with this script.
  setsid "$PY" -m ssl_retrieval.experiments --config=configs/experiments/debian.json \
    >>runs/debian/worker2.log 2>&1 &
  worker=$!
  trap 'kill -- -"$worker" 2>/dev/null || true' EXIT
  trap 'exit 130' INT TERM
  finals
  wait "$worker" || { echo "the second worker failed: see runs/debian/worker2.log" >&2; exit 1; }
  trap - EXIT INT TERM
else
  finals
fi
stage "done: results/debian/report.md"
