#!/usr/bin/env bash
# The whole Debian experiment behind results/debian (README, "Results on the Debian data"):
# data at three training fractions, tuning on validation, the MI-normalisation check, then the
# final runs on test, short fractions first. Every step resumes where it stopped (and skips what
# the committed JSON Lines already record), so run it again after any interruption.
#
#   bash scripts/debian_experiments.sh            # about 20 hours on 2 cores from nothing (an estimate)
set -euo pipefail
PY="${PY:-.venv/bin/python}"

stage() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

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

stage "tuning every method on validation (results/debian/tuning)"
"$PY" -m ssl_retrieval.tune --config=configs/tuning/debian.json
stage "final runs at fractions 0.01 and 0.1 (results/debian)"
"$PY" -m ssl_retrieval.experiments --config=configs/experiments/debian.json --fractions=0.01,0.1
stage "CFM's MI normalisation on validation (results/debian/mi_normalization)"
"$PY" -m ssl_retrieval.tune --config=configs/tuning/debian_mi.json
stage "final runs at fraction 1.0, and the report"
"$PY" -m ssl_retrieval.experiments --config=configs/experiments/debian.json
stage "done: results/debian/report.md"
