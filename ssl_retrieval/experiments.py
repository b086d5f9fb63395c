r"""Runs the paper's comparisons on your data: methods x training fractions x seeds, then a report.

  python -m ssl_retrieval.experiments --config=configs/experiments/debian.json
  python -m ssl_retrieval.experiments --config=configs/experiments/debian.json --report_only

Each run is `python -m ssl_retrieval.train` then `python -m ssl_retrieval.evaluate` in a
subprocess (memory is returned after every run). Finished runs (metrics.json present) are
skipped, so an interrupted experiment resumes. The report directory gets results.jsonl (every
run), references.jsonl (reference recommenders), report.md (the paper's tables with 95%
confidence intervals) and figures (Recall@50 against alpha and dropout rate; t-SNE).

The config (JSON):
  title, output_dir (report, small files), runs_dir (model dirs, large),
  data_dirs: {fraction: data dir}, fraction_flags: {fraction: [extra train flags]},
  methods: {method: flagfile, or {fraction: flagfile} (e.g. the flagfiles `ssl_retrieval.tune`
  chose per fraction)}, seeds: [..], baseline: "baseline", extra_flags: [..],
  tables: {"main": {"methods", "fractions"}, "augmentations": {"methods", "fractions"}},
  sweeps: {"alpha" | "dropout_rate": {"methods", "values", "fraction", "seeds"}},
  references: [top_popular, feature_knn, cooccurrence],
  claims: {"trials": tuning trials.jsonl, "curve_fraction": "0.1"} (report.md then says what
  holds of each of the paper's claims, experimentation/claims.py),
  tsne: {"methods", "fraction", "seed", "color_by", "sample", "top_values"}
"""

from absl import app, flags

from ssl_retrieval import cli
from ssl_retrieval.experimentation import configs, runner

CONFIG = flags.DEFINE_string("config", None, "Experiment config JSON (configs/experiments/).")
REPORT_ONLY = flags.DEFINE_bool(
    "report_only",
    False,
    "Train nothing: report the runs finished so far (references and t-SNE are still computed).",
)
DRY_RUN = flags.DEFINE_bool(
    "dry_run",
    False,
    "Train nothing: list the planned runs, each recorded, to run, or waiting for its tuned "
    "flagfile, then per fraction how many are left and the time they should take.",
)
FRACTIONS = flags.DEFINE_list(
    "fractions",
    None,
    "Train only runs of these training fractions now (e.g. 0.01,0.1: the short ones first); "
    "the report still has every run recorded by the same commands. Default: all.",
)
METHODS = flags.DEFINE_list(
    "methods",
    None,
    "Train only runs of these methods now (e.g. baseline: its seeds first, once tuning wrote "
    "its flagfile); combines with --fractions. Default: all.",
)
flags.mark_flag_as_required("config")


def _experiments() -> str:
    if DRY_RUN.value:
        return runner.status_text(configs.load_experiment(CONFIG.value))
    summary = runner.run_experiment(
        CONFIG.value,
        report_only=REPORT_ONLY.value,
        fractions=FRACTIONS.value,
        methods=METHODS.value,
    )
    return f"experiments: {summary['results']} runs -> {summary['output_dir']}/report.md"


main = cli.main(_experiments, errors=(ValueError, KeyError, OSError, RuntimeError))

if __name__ == "__main__":
    app.run(main)
