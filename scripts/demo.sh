#!/usr/bin/env bash
# The end-to-end demo on real data: the Debian package index of this machine (or, without one,
# a synthetic long-tail catalogue), or your own raw data:
#
#   bash scripts/demo.sh [OUT_DIR] [RAW_DIR]
#
# OUT_DIR (default runs/demo) receives every stage's output; RAW_DIR, when given, is raw data in
# the input format (items, pairs, schema.json: docs/contracts.md) used instead of a built-in
# source. Each stage is skipped when its output already exists, so a re-run is fast; delete
# OUT_DIR to start again.
#
# It prints about 80 lines: each stage's summary, the training's progress and validations, the
# slice table and the neighbours. Long work shows a progress bar on a terminal and a line a
# minute elsewhere (ssl_retrieval/progress_bar.py). The data stages run with --verbosity=-1
# (warnings only): their per-file lines are for runs on your own data, their summaries are here.
set -euo pipefail
OUT="${1:-runs/demo}"
RAW="${2:-}"
PY="${PY:-.venv/bin/python}"
mkdir -p "$OUT"
STARTED=$SECONDS

stage() { printf '\n==> %s\n' "$*"; }

# 1. Raw data: items + pairs as JSON Lines, with a dataset schema.
if [ -n "$RAW" ]; then
  stage "1/5 raw data: yours, $RAW"
  test -f "$RAW/schema.json" || { echo "error: $RAW has no schema.json (docs/contracts.md)" >&2; exit 1; }
  RAW_DIR="$RAW"
elif [ -f "$OUT/raw/schema.json" ]; then
  stage "1/5 raw data: $OUT/raw exists, skipping"
  RAW_DIR="$OUT/raw"
elif ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  stage "1/5 raw data: this machine's Debian package index -> $OUT/raw"
  "$PY" -m ssl_retrieval.sources --source=debian --output_dir="$OUT/raw" --verbosity=-1
  RAW_DIR="$OUT/raw"
else
  stage "1/5 raw data: no Debian package index here (run 'apt-get update' for real data); the synthetic source -> $OUT/raw"
  "$PY" -m ssl_retrieval.sources --source=synthetic --num_items=50000 --num_pairs=250000 \
    --output_dir="$OUT/raw" --verbosity=-1
  RAW_DIR="$OUT/raw"
fi

# 2. Preprocessing (Apache Beam, local runner): vocabularies, mutual information, splits, TFRecords.
if [ ! -f "$OUT/data/schema.json" ]; then
  stage "2/5 preprocessing with Apache Beam -> $OUT/data"
  "$PY" -m pipelines.preprocess --items="$RAW_DIR/items*" --pairs="$RAW_DIR/pairs*" \
    --schema="$RAW_DIR/schema.json" --output_dir="$OUT/data" --verbosity=-1
else
  stage "2/5 preprocessing: $OUT/data exists, skipping"
fi
echo "counts, splits and mutual information: $OUT/data/README.md"

# 3. Training: the default recipe (configs/recipe.cfg), kept at its best validation checkpoint.
stage "3/5 training (configs/demo.cfg) -> $OUT/model   (rerun resumes; a finished run is skipped)"
"$PY" -m ssl_retrieval.train --flagfile=configs/demo.cfg --data_dir="$OUT/data" --model_dir="$OUT/model"

# 4. Evaluation over the whole corpus (the test split), beside the reference recommenders: one
# line each (what is evaluated, and its progress), the metrics in one table at the end.
stage "4/5 evaluation: Recall@K and MAP@K over all $(sed -n 's/.*"num_items": \([0-9]*\).*/\1/p' "$OUT/data/stats.json") items"
evaluate() { "$PY" -m ssl_retrieval.evaluate "$@" >/dev/null; }
# Done already unless training chose the model's blend again since (newer blend.json).
if [ ! "$OUT/model/metrics.json" -nt "$OUT/model/blend.json" ]; then
  evaluate --model_dir="$OUT/model"
fi
for reference in top_popular feature_knn cooccurrence; do
  if [ ! -f "$OUT/reference/$reference.json" ]; then
    evaluate --data_dir="$OUT/data" --recommender="$reference" --output="$OUT/reference/$reference.json"
  fi
done
# The peers, established libraries and popularity + TF-IDF without a model
# (ssl_retrieval/evaluation/peers.py), with the parameters
# their tuning chose on the Debian validation split: tuning them here would add about 20
# minutes on 2 cores, so --peer_params skips it (on other data they are Debian's choice, not
# tuned there).
declare -A PEER_PARAMS=(
  [links]='{}'
  [als]='{"factors": 128, "regularization": 10.0, "alpha": 100.0, "both_ways": true}'
  [itemknn]='{"K": 5, "both_ways": true}'
  [lightfm]='{"factors": 128, "learning_rate": 0.2, "epochs": 80}'
  [tfidf_prior]='{"beta": 0.08}'
)
for peer in links als itemknn lightfm tfidf_prior; do
  if [ ! -f "$OUT/reference/$peer.json" ]; then
    evaluate --data_dir="$OUT/data" --recommender="$peer" \
      --peer_params="${PEER_PARAMS[$peer]}" --output="$OUT/reference/$peer.json"
  fi
done
# Recall@10 and Recall@50 side by side: evaluator.slice_table's two tables, one row each.
"$PY" - "$OUT" <<'PY'
import json, sys
from ssl_retrieval.evaluation.evaluator import slice_table
from ssl_retrieval.evaluation.config import RECOMMENDERS  # "model", then the references
out = sys.argv[1]
paths = {"model (demo recipe)": f"{out}/model/metrics.json"}
paths.update({r: f"{out}/reference/{r}.json" for r in RECOMMENDERS[1:]})
metrics = {name: json.load(open(p))["metrics"] for name, p in paths.items()}
at10, at50 = (slice_table(metrics, c).splitlines() for c in ("recall@10", "recall@50"))
width = len(at10[0]) - 32  # slice_table's rows: the name, then 4 slices of 8 characters
print()
print(f"{'':<{width}}{'Recall@10 per query':^32}  {'Recall@50 per query':^32}".rstrip())
for i, (left, right) in enumerate(zip(at10, at50)):
    print(f"{'' if i == 0 else left[:-32]:<{width}}{left[-32:]}  {right[-32:]}")
PY

# 5. Export: SavedModel + ScaNN index, then "items similar to X" from it.
stage "5/5 export with a ScaNN index -> $OUT/export"
LATEST_INFO="$(ls -t "$OUT"/export/*/export_info.json 2>/dev/null | head -1 || true)"
if [ -z "$LATEST_INFO" ] || [ ! "$LATEST_INFO" -nt "$OUT/model/blend.json" ]; then
  "$PY" -m ssl_retrieval.export --model_dir="$OUT/model" --export_dir="$OUT/export" --overwrite
else
  echo "$OUT/export has a version of this blend, skipping"
fi
if grep -qx vim "$OUT/data/vocab/item_id.txt"; then
  ITEMS="vim,postgresql"
else
  ITEMS="$(head -2 "$OUT/data/vocab/item_id.txt" | paste -sd, -)"
fi
"$PY" -m ssl_retrieval.similar --export_dir="$OUT/export" --item_ids="$ITEMS" --k=5

MINUTES=$(( (SECONDS - STARTED) / 60 ))
cat <<EOM

Done in $MINUTES min. What to try next:
  serve the export:  $PY -m ssl_retrieval.serve --export_dir=$OUT/export &
  then open          http://127.0.0.1:8501/   (the page: any item's neighbours)
  or ask the API:    curl 'http://127.0.0.1:8501/v1/similar/${ITEMS%%,*}?k=5'
  your own data:     bash scripts/demo.sh runs/mine path/to/raw   (items, pairs, schema.json: docs/contracts.md)
EOM
