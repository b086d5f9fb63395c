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
interrupted tuning resumes where it stopped. A trial whose record in the committed trials.jsonl
stands for it (the same resolved training config on the same data, `experimentation/keys.py`)
counts as finished too, so tuning resumes on a fresh clone without its model dirs.

The config (JSON):
  name, output_dir (trials.jsonl, README.md), runs_dir (trial model dirs, large), flagfile_dir,
  data_dirs: {fraction: data dir}, fraction_flags: {fraction: [train flags]},
  common_flags: [train flags of every trial, e.g. --validate_every=100 --patience=4],
  methods: {method: {"flagfile": path, "grid": {flag: [values]}}}, trials: N, seed: 0,
  promote: {fraction: {"from": fraction, "top": K}} (optional: on that fraction each method
    tries only its K best points of the other, which data_dirs lists earlier: spend the
    expensive fraction's budget on the points the cheap one ranked first),
  backbone: {"method": method, "params": [flags]} (optional: those flags are tuned on that
    method, the first of methods, at each fraction, and every other method is tried on the
    values chosen there, searching only its own grid: the paper's protocol, section 4.1),
  variants: {name: {"flagfile": path, "like": method, "params": [flags], "fractions": [..]}}
    (optional: untuned variants; each gets a flagfile per fraction (all, or those listed) with
    the listed flags, and the backbone's, at `like`'s chosen values)
"""

import os

from absl import app

from ssl_retrieval import atomic, cli
from ssl_retrieval.experimentation import configs, tuning

# One flag per field of TuneOptions, from the dataclass.
FLAGS = cli.define_flags(configs.TuneOptions, required=("config",))


def _tune() -> str:
    options = cli.from_flags(configs.TuneOptions, FLAGS)
    if options.dry_run:
        config = configs.load_tuning(options.config)
        # A promoted fraction lists the points the trials recorded so far rank first.
        trials = atomic.read_jsonl(os.path.join(config.output_dir, "trials.jsonl"), missing_ok=True)
        plan = tuning.plan(config, trials)
        return "\n".join(tuning.trial_id(*trial) for trial in plan)
    summary = tuning.run_tuning(options.config)
    chosen = "".join(f"\n  {path}" for path in summary["flagfiles"].values())
    return f"tune: {summary['trials']} trials; chosen flagfiles:{chosen}"


main = cli.main(_tune, errors=(ValueError, KeyError, OSError, RuntimeError))

if __name__ == "__main__":
    app.run(main)
