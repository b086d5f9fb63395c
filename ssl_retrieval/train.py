r"""Trains the two-tower model with the method's self-supervised head.

  python -m ssl_retrieval.train --flagfile=configs/debian_cfm.cfg
  python -m ssl_retrieval.train --flagfile=configs/debian_cfm.cfg --seed=2 \
      --model_dir=runs/debian/models/cfm_s2      # later flags override the flagfile

Rerunning the same command resumes from the last checkpoint; a finished run is a no-op.
Outputs in --model_dir: config.json (the resolved config), checkpoints/, logs/ (TensorBoard),
train_metrics.json.
"""

from absl import app

from ssl_retrieval import cli
from ssl_retrieval import config as config_lib
from ssl_retrieval.ranking.config import BlendConfig

# One flag per TrainConfig field and per BlendConfig field (how the blend is chosen at the end):
# names, defaults, help and enums are the dataclasses'.
FLAGS = cli.define_flags(config_lib.TrainConfig, required=("data_dir", "model_dir"))
BLEND_FLAGS = cli.define_flags(BlendConfig)


def config_from_flags() -> config_lib.TrainConfig:
    return cli.from_flags(config_lib.TrainConfig, FLAGS)


def _train() -> str:
    config = config_from_flags().validate()
    blend_config = cli.from_flags(BlendConfig, BLEND_FLAGS).validate()
    from ssl_retrieval.training import trainer  # noqa: PLC0415  (imports TensorFlow)

    summary = trainer.run(config, blend_config)
    if summary.get("already_finished"):
        return f"train: {config.model_dir} already finished ({summary['steps']} steps)"
    return (
        f"train: {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
        f"{summary['examples_per_second']:.0f} examples/s -> {config.model_dir}"
    )


main = cli.main(_train)

if __name__ == "__main__":
    app.run(main)
