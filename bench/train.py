"""Benchmark of training throughput: examples per second of the baseline, cfm and a stock TFRS
two-tower model, and of the input pipeline alone.

Prints JSON lines, all measured in this run on the same data and the same towers:
  {"figure": "train", "model": "baseline" | "cfm" | "stock_tfrs", "examples_per_s", ...}
  {"figure": "input_pipeline", "examples_per_s"}     the tf.data pipeline alone
  {"figure": "ratios", "cfm_over_baseline", "baseline_over_stock_tfrs", "input_over_cfm"}

With --levers, instead: what each lever of the recipe costs in training speed, one stack measured
in this run (docs/recipe.md, "What each lever costs in training speed"):
  {"figure": "lever", "lever", "flags", "examples_per_s", "over_paper_setup"}
  paper setup (two towers, an id row per item, Adagrad 0.1) -> + shared tower -> + ids only for
  items in >= 2 pairs and id dropout 0.2 -> + Adam 0.001 (the recipe); then the recipe with
  mixed negatives, with the symmetric loss, and with cfm.

With --optimizers=adam,lazy_adam: the recipe's examples/s with each optimizer, in this run:
  {"figure": "optimizer", "optimizer", "items", "examples_per_s", "over_first"}

With --ssl: what an SSL task costs the recipe, measured in this run, the variants in turn,
--rounds times (the machine is shared: a round that ran beside another job shows it):
  {"figure": "ssl", "round", "variant", "flags", "examples_per_s", "over_recipe"}
  the recipe, + cfm, + cfm with the cold-start view (--ssl_id_view=cold_start), + rfm.

The stock model is `tfrs.Model` + `tfrs.tasks.Retrieval` (dot product of the same L2-normalised
towers, temperature 0.07, no SSL), trained by the same loop. Examples = pairs of the main batch.

  .venv/bin/python bench/train.py [--data_dir=runs/debian/data] [--steps=40] [--levers]
  .venv/bin/python bench/train.py --data_dir=runs/scale/data --optimizers=adam,lazy_adam,adagrad
  .venv/bin/python bench/train.py --ssl --steps=60 --warmup=10 --rounds=2
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TFRS needs Keras 2; ssl_retrieval sets this too, but TFRS is imported first here.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow_recommenders as tfrs  # noqa: E402, I001

from ssl_retrieval import config as config_lib  # noqa: E402
from ssl_retrieval import data as data_lib  # noqa: E402
from ssl_retrieval.model import two_tower as model_lib  # noqa: E402
from ssl_retrieval import data_dir as data_dir_lib  # noqa: E402
from ssl_retrieval import testing  # noqa: E402
from ssl_retrieval.compat import tf  # noqa: E402
from ssl_retrieval.data_dir import DataDir  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


class StockTwoTower(tfrs.Model):
    """The TFRS tutorial model with our towers: no SSL, tfrs.tasks.Retrieval as the loss."""

    def __init__(self, config, encoder_features):
        super().__init__()
        self.encoder = model_lib.FeatureEncoder(encoder_features, config.embedding_dim)
        self.query_mlp = model_lib.MLP(config.hidden_layers)
        self.item_mlp = model_lib.MLP(config.hidden_layers)
        self.task = tfrs.tasks.Retrieval(temperature=config.temperature)

    def compute_loss(self, inputs, training=False):
        pairs, _ = inputs
        q = self.query_mlp(self.encoder(pairs["query"]))
        c = self.item_mlp(self.encoder(pairs["candidate"]))
        return self.task(q, c, compute_metrics=False)


def examples_per_second(model, dataset, steps, warmup, batch_size, ours, optimizer=None):
    optimizer = optimizer or tf.keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.1)
    model.optimizer = optimizer
    iterator = iter(dataset)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            batch = next(iterator)
            loss = model.compute_losses(batch, True)[0] if ours else model.compute_loss(batch, True)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, model.trainable_variables, strict=True) if g is not None]
        )
        return loss

    for _ in range(warmup):
        step()
    start = time.time()
    for _ in range(steps):
        loss = step()
    loss.numpy()
    return steps * batch_size / (time.time() - start)


PAPER_SETUP = dict(
    share_towers=False, id_min_count=0, id_dropout=0.0, optimizer="adagrad", learning_rate=0.1
)
LEVERS = [
    ("paper setup", {}),
    ("+ shared tower", dict(share_towers=True)),
    ("+ ids for items in >= 2 pairs, id dropout 0.2", dict(id_min_count=2, id_dropout=0.2)),
    ("+ Adam 0.001 (the recipe)", dict(optimizer="adam", learning_rate=0.001)),
    ("recipe + mixed negatives", dict(mixed_negatives=True)),
    ("recipe + symmetric loss", dict(symmetric_loss=True)),
    ("recipe + cfm", dict(method="cfm")),
]


def recipe_rate(data_dir, dataset, args, **flags) -> float:
    """Examples/s of our model trained with the package defaults changed by `flags`."""
    from ssl_retrieval.training import trainer  # noqa: PLC0415

    config = config_lib.TrainConfig(
        data_dir=data_dir, model_dir="unused", batch_size=args.batch_size, **flags
    )
    tf.keras.utils.set_random_seed(0)
    return examples_per_second(
        model_lib.build_model(config),
        dataset(),
        args.steps,
        args.warmup,
        args.batch_size,
        ours=True,
        optimizer=trainer.make_optimizer(config),
    )


def levers(data_dir, dataset, args):
    """Examples/s of each lever stacked on the previous ones (the last three on the recipe)."""
    stacked, paper_rate = dict(PAPER_SETUP), None
    for name, change in LEVERS:
        if name.startswith("recipe +"):
            flags = {**stacked, **change}  # stacked is the recipe by now
        else:
            flags = stacked = {**stacked, **change}
        rate = recipe_rate(data_dir, dataset, args, **flags)
        paper_rate = paper_rate or rate
        emit(
            figure="lever",
            lever=name,
            flags={k: v for k, v in flags.items() if PAPER_SETUP.get(k) != v},
            examples_per_s=round(rate, 1),
            over_paper_setup=round(rate / paper_rate, 3),
        )


SSL_VARIANTS = [
    ("recipe", {}),
    ("recipe + cfm", dict(method="cfm")),
    ("recipe + cfm + cold-start view", dict(method="cfm", ssl_id_view="cold_start")),
    ("recipe + rfm", dict(method="rfm")),
]


def ssl_costs(data_dir, dataset, args):
    """Examples/s of the recipe (the package defaults) with each SSL variant, --rounds times."""
    for round_ in range(args.rounds):
        recipe = None
        for name, flags in SSL_VARIANTS:
            rate = recipe_rate(data_dir, dataset, args, **flags)
            recipe = recipe or rate
            emit(
                figure="ssl",
                round=round_,
                variant=name,
                flags=flags,
                examples_per_s=round(rate, 1),
                over_recipe=round(rate / recipe, 3),
            )


def optimizers(data_dir, dataset, args):
    """Examples/s of the recipe (the package defaults) with each of --optimizers."""
    items = DataDir(data_dir).schema.counts.get("items")
    first = None
    for name in args.optimizers.split(","):
        rate = recipe_rate(data_dir, dataset, args, optimizer=name)
        first = first or rate
        emit(
            figure="optimizer",
            optimizer=name,
            items=items,
            examples_per_s=round(rate, 1),
            over_first=round(rate / first, 2),
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="runs/debian/data")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument(
        "--levers", action="store_true", help="the recipe's levers' costs instead (see above)"
    )
    parser.add_argument(
        "--optimizers",
        default=None,
        help="Comma list of --optimizer values: the recipe's examples/s with each instead "
        "(e.g. adam,lazy_adam,adagrad; at 1M items Keras's Adam rewrites whole tables).",
    )
    parser.add_argument(
        "--ssl", action="store_true", help="what an SSL task costs the recipe instead (see above)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="--ssl: times each variant runs")
    args = parser.parse_args()
    data_dir, source = args.data_dir, "debian"
    if not os.path.exists(os.path.join(data_dir, data_dir_lib.SCHEMA)):
        data_dir = testing.make_data_dir(tempfile.mkdtemp(), num_items=20000, num_pairs=200000)
        source = "synthetic (ssl_retrieval.testing; no Debian data dir found)"
    schema = DataDir(data_dir).schema
    batch = args.batch_size

    def dataset():
        return data_lib.training_dataset(data_dir, schema, batch, batch, seed=0)

    if args.levers:
        return levers(data_dir, dataset, args)
    if args.optimizers:
        return optimizers(data_dir, dataset, args)
    if args.ssl:
        return ssl_costs(data_dir, dataset, args)

    # Steady state, like the training figures: the first batches wait for the shuffle buffers
    # (100k records per stream) to fill, which happens once per run, not per step.
    iterator = iter(dataset())
    for _ in range(args.warmup):
        next(iterator)
    start = time.time()
    n = 0
    for _ in range(args.steps):
        pairs, _ = next(iterator)
        n += int(pairs["weight"].shape[0])
    input_rate = n / (time.time() - start)
    emit(figure="input_pipeline", data=source, examples_per_s=round(input_rate, 1))

    rates = {}
    for name in ("baseline", "cfm", "stock_tfrs"):
        config = config_lib.TrainConfig(
            data_dir=data_dir,
            model_dir="unused",
            method="cfm" if name == "cfm" else "baseline",
            batch_size=batch,
        )
        tf.keras.utils.set_random_seed(0)
        if name == "stock_tfrs":
            model = StockTwoTower(config, model_lib.feature_configs(schema, data_dir))
        else:
            model = model_lib.build_model(config)
        rate = examples_per_second(
            model, dataset(), args.steps, args.warmup, batch, ours=name != "stock_tfrs"
        )
        rates[name] = rate
        emit(
            figure="train", model=name, data=source, batch_size=batch, examples_per_s=round(rate, 1)
        )
    emit(
        figure="ratios",
        cfm_over_baseline=round(rates["cfm"] / rates["baseline"], 3),
        baseline_over_stock_tfrs=round(rates["baseline"] / rates["stock_tfrs"], 3),
        input_over_cfm=round(input_rate / rates["cfm"], 2),
        input_over_baseline=round(input_rate / rates["baseline"], 2),
        goals={
            "cfm_over_baseline": ">= 0.6",
            "baseline_over_stock_tfrs": ">= 1.0",
            "input": ">= 5",
        },
    )


if __name__ == "__main__":
    main()
