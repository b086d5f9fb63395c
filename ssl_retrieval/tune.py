r"""Tunes each method's hyperparameters on the validation split, the same budget for each.

  python -m ssl_retrieval.tune --config=configs/tuning/debian.json
  python -m ssl_retrieval.tune --config=configs/tuning/debian.json --dry_run

For every (method, training fraction), `trials` configurations are drawn without replacement from
the method's grid (a seeded random search: the same draws on every run) and each is trained with
validation during training (`--validate_every`, `--patience`: the best checkpoint on validation
Recall@50 counts, so a trial's budget is a maximum, not a fixed length). Every finished trial is a
line of `<output_dir>/trials.jsonl`; the winner of each (method, fraction) becomes a flagfile
`<flagfile_dir>/<name>_<method>_<fraction>.cfg` that includes the method's flagfile and sets the
chosen values, which the experiments config then names. Nothing here reads the test split.

Each trial is `python -m ssl_retrieval.train` in a subprocess; finished trials are skipped, so an
interrupted tuning resumes where it stopped.

The config (JSON):
  name, output_dir (trials.jsonl, README.md), runs_dir (trial model dirs, large), flagfile_dir,
  data_dirs: {fraction: data dir}, fraction_flags: {fraction: [train flags]},
  common_flags: [train flags of every trial, e.g. --validate_every=100 --patience=4],
  methods: {method: {"flagfile": path, "grid": {flag: [values]}}}, trials: N, seed: 0
"""

import json
import logging
import sys

from absl import app, flags

from ssl_retrieval import tuning

CONFIG = flags.DEFINE_string("config", None, "Tuning config JSON (configs/tuning/).")
DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the trials and exit.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    if CONFIG.value is None:
        raise app.UsageError("--config is required")
    try:
        if DRY_RUN.value:
            with open(CONFIG.value) as f:
                config = json.load(f)
            for method, fraction, point in tuning.plan(config):
                print(tuning.trial_id(method, fraction, point))
            return
        summary = tuning.run_tuning(CONFIG.value)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"tune: {summary['trials']} trials; chosen flagfiles:")
    for path in summary["flagfiles"].values():
        print(f"  {path}")


if __name__ == "__main__":
    app.run(main)
