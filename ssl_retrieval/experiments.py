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
  evaluations: {name: [extra evaluate flags]} (each run evaluated again on test, e.g. the model
  alone: {"cosine": ["--popularity_prior=0", "--prior_share=1"]}; in each record's "evaluations"),
  claims: {"trials": tuning trials.jsonl, "curve_fraction": "0.1"} (report.md then says what
  holds of each of the paper's claims, experimentation/claims.py),
  tsne: {"methods", "fraction", "seed", "color_by", "sample", "top_values"}
"""

from absl import app

from ssl_retrieval import cli
from ssl_retrieval.experimentation import configs, runner

# One flag per field of ExperimentsOptions, from the dataclass.
FLAGS = cli.define_flags(configs.ExperimentsOptions, required=("config",))


def _experiments() -> str:
    options = cli.from_flags(configs.ExperimentsOptions, FLAGS)
    if options.dry_run:
        return runner.status_text(configs.load_experiment(options.config))
    summary = runner.run_experiment(
        options.config,
        report_only=options.report_only,
        fractions=options.fractions,
        methods=options.methods,
        seeds=options.seeds,
    )
    return f"experiments: {summary['results']} runs -> {summary['output_dir']}/report.md"


main = cli.main(_experiments, errors=(ValueError, KeyError, OSError, RuntimeError))

if __name__ == "__main__":
    app.run(main)
