#!/usr/bin/env bash
# The end-to-end demo on real data: the Debian package index of this machine (or, without one,
# a synthetic long-tail catalogue). Each stage is skipped when its output already exists, so a
# re-run is fast; delete the directory (default runs/demo) to start again.
set -euo pipefail
OUT="${1:-runs/demo}"
PY="${PY:-.venv/bin/python}"
mkdir -p "$OUT"

stage() { printf '\n==> %s\n' "$*"; }

# 1. Raw data: items + pairs as JSON Lines, with a dataset schema.
if [ ! -f "$OUT/raw/schema.json" ]; then
  if ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
    stage "1/5 raw data: Debian package index found on this machine"
    "$PY" -m ssl_retrieval.sources --source=debian --output_dir="$OUT/raw"
  else
    stage "1/5 raw data: no Debian package index here (run 'apt-get update' for real data); using the synthetic source"
    "$PY" -m ssl_retrieval.sources --source=synthetic --num_items=50000 --num_pairs=250000 --output_dir="$OUT/raw"
  fi
else
  stage "1/5 raw data: $OUT/raw exists, skipping"
fi
cat "$OUT/raw/README.md"

# 2. Preprocessing (Apache Beam, local runner): vocabularies, mutual information, splits, TFRecords.
if [ ! -f "$OUT/data/schema.json" ]; then
  stage "2/5 preprocessing with Apache Beam -> $OUT/data"
  "$PY" -m pipelines.preprocess --items="$OUT/raw/items*.jsonl" --pairs="$OUT/raw/pairs*.jsonl" \
    --schema="$OUT/raw/schema.json" --output_dir="$OUT/data"
else
  stage "2/5 preprocessing: $OUT/data exists, skipping"
fi
sed -n '/## Counts/,$p' "$OUT/data/README.md"

# 3. Training: two towers + the SSL head with correlated feature masking (the paper's method).
stage "3/5 training (method cfm) -> $OUT/model   (rerun resumes; a finished run is skipped)"
"$PY" -m ssl_retrieval.train --flagfile=configs/demo_cfm.cfg --data_dir="$OUT/data" --model_dir="$OUT/model"
