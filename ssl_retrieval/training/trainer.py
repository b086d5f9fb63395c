"""The training loop: tf.distribute, the step, and the parts called between steps.

`run(config)` is what `python -m ssl_retrieval.train` calls and what tests call directly. It
reads like the paper's training: build the two towers and their SSL head, step through the
pairs (and the uniform item stream) minimising the batch softmax plus alpha times the auxiliary
loss, then choose the blend on validation. What happens between steps is done by small parts
(`progress.Callback`s, as in keras' `fit` and orbit's `StandardTrainer`), in this order:

  averaging.Averaging           --weight_averaging: the moving average of the weights
  progress.ProgressLog          losses, TensorBoard, throughput (a non-finite loss stops the run)
  validation.ModelSelection     validation.jsonl, best/, early stopping (--patience)
  checkpoints.Checkpointing     checkpoints/ every --checkpoint_every steps

Resuming: checkpoints hold the model, the optimizer and the step. A rerun of the same command
restores the newest readable one and rebuilds the input streams skipping the batches already
trained on, so it sees the same data and, augmentations being stateless functions of (seed,
step), the same augmentations; a kill loses at most `checkpoint_every` steps. A finished run
(summary.py) is recognised and left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from ssl_retrieval import config as config_lib
from ssl_retrieval import data as data_lib
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.evaluation import blend_choice, evaluator
from ssl_retrieval.model import two_tower as model_lib
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking.config import BlendConfig
from ssl_retrieval.training import averaging, distribute, optimizers, progress, validation
from ssl_retrieval.training import summary as summary_lib

# The F401 names are read from the trainer by tests written before the parts had modules.
from ssl_retrieval.training.checkpoints import (
    Checkpointing,
    use_newest_readable_checkpoint,  # noqa: F401
)
from ssl_retrieval.training.validation import (
    BEST_DIR,  # noqa: F401
    Validator,
    validation_interval,  # noqa: F401
)
from ssl_retrieval.training.validation import read_validations as _read_validations  # noqa: F401


def total_steps(config: config_lib.TrainConfig, schema: schema_lib.Schema) -> int:
    """--train_steps, else epochs x full batches of training pairs."""
    try:
        return config_lib.budget_steps(
            schema.counts.get("train_pairs", 0),
            config.batch_size,
            config.epochs,
            config.train_steps,
        )
    except ValueError as e:
        raise ValueError(f"{config.data_dir}: {e}") from None


def make_optimizer(config: config_lib.TrainConfig):
    return optimizers.make(config.optimizer, config.learning_rate)


def run(config: config_lib.TrainConfig, blend_config: BlendConfig | None = None) -> dict:
    """Trains (or resumes, or recognises a finished run) and returns a summary dict.

    With validation and `blend_config.choose_popularity_prior` (the default `BlendConfig()`),
    the blend is chosen on validation at the end (`evaluation/blend_choice.py`); a finished run
    whose blend was chosen with other options chooses it again.

    Raises:
      ValueError: invalid config or data dir, or a model dir holding another run.
    """
    blend_config = (blend_config or BlendConfig()).validate()
    data_dir = DataDir.of(config.data_dir)
    config.validate(data_dir.schema.names)
    strategy = distribute.get_strategy(config.strategy)
    _check_replicas(config, strategy.num_replicas_in_sync)
    steps = total_steps(config, data_dir.schema)
    _prepare_model_dir(config, steps)
    tf.keras.utils.set_random_seed(config.seed)  # initialisation; data and augmentations are seeded
    with strategy.scope():
        model = model_lib.build_model(config, data_dir)
        model.optimizer = make_optimizer(config)
        checkpointing = Checkpointing(config.model_dir, config.checkpoint_every, model)
    start_step = checkpointing.restore()
    if start_step >= steps or summary_lib.finished(config.model_dir):
        checkpointing.not_training()
        return _already_finished(config, blend_config, data_dir, model, steps)
    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "logs"))
    weights = averaging.Averaging(
        config.weight_averaging,
        config.weight_averaging_every,
        strategy,
        model,
        checkpointing.checkpoint,
    )
    selection = validation.ModelSelection(config, data_dir, model, start_step, writer, weights)
    iterator = _training_input(config, strategy, data_dir.schema, start_step)
    log = progress.ProgressLog(config.log_every, config.batch_size, writer)
    _log_start(config, steps, strategy.num_replicas_in_sync)
    state = _train(
        strategy, model, iterator, start_step, steps, [weights, log, selection, checkpointing]
    )
    summary = summary_lib.make(config, state, start_step, log.losses, selection.best())
    if selection.validated and blend_config.choose_popularity_prior:
        _choose_blend(selection.validator, model, config, blend_config, summary)
    _count_mask_patterns(model, state.step, summary)
    summary_lib.write(config.model_dir, summary)
    return summary


def _train(strategy, model, iterator, start_step: int, steps: int, callbacks: list):
    """Steps from `start_step` to `steps` (or until a callback stops it); returns the
    `progress.Progress` where it ended."""
    train_step = _make_train_step(strategy, model)
    state = progress.Progress(step=start_step, steps=steps)
    started = time.time()
    while state.step < steps and not state.stop:
        state.values = train_step(iterator)
        state.step += 1
        for callback in callbacks:
            callback.on_step_end(state)
    state.seconds = time.time() - started
    for callback in callbacks:
        callback.on_train_end(state)
    return state


def _make_train_step(strategy, model):
    """One step on the next global batch: (total, main, auxiliary) losses summed over replicas."""

    def step_fn(inputs):
        with tf.GradientTape() as tape:
            total, main, aux = model.compute_losses(inputs, training=True)
        variables = model.trainable_variables
        gradients = tape.gradient(total, variables)
        model.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        )
        return total, main, aux

    @tf.function
    def train_step(it):
        per_replica = strategy.run(step_fn, args=(next(it),))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in per_replica]

    return train_step


def _training_input(config, strategy, schema, start_step: int):
    """The training batches, the `start_step` already trained on skipped, one per replica."""
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: data_lib.training_dataset(
            config.data_dir,
            schema,
            config.batch_size,
            config.effective_ssl_batch_size,
            config.seed,
            skip_batches=start_step,
            input_context=ctx,
        )
    )
    return iter(dataset)


def _check_replicas(config: config_lib.TrainConfig, replicas: int) -> None:
    for flag, value in (
        ("--batch_size", config.batch_size),
        ("--ssl_batch_size", config.effective_ssl_batch_size),
    ):
        if value % replicas:
            raise ValueError(f"{flag}={value} must be divisible by the {replicas} replicas")


def _prepare_model_dir(config: config_lib.TrainConfig, steps: int) -> None:
    """Saves the config into the model dir; a dir holding the same run (or the same run with
    another budget) is kept, one holding another run is refused (or deleted, --overwrite)."""
    path = config_lib.path(config.model_dir)
    if os.path.exists(path):
        previous = config_lib.load(config.model_dir)
        changed = config.differences(previous)
        budget = [k for k in changed if k in config_lib.BUDGET_FIELDS]
        if len(budget) == len(changed) and not config.overwrite:
            # Also with nothing changed: a reopen an earlier call did not make (its config is
            # saved with the new budget already).
            summary_lib.reopen_for_budget(config, steps)
            changed = []
        if changed and not config.overwrite:
            details = ", ".join(
                f"--{k}: {previous.to_json()[k]!r} -> {config.to_json()[k]!r}" for k in changed
            )
            raise config_lib.ChangedRunError(
                f"{config.model_dir} holds a run with a different config ({details}); use another "
                "--model_dir, or --overwrite to delete it and start again"
            )
        if changed:
            shutil.rmtree(config.model_dir)
    elif os.path.isdir(config.model_dir) and os.listdir(config.model_dir) and not config.overwrite:
        raise ValueError(
            f"--model_dir={config.model_dir} is not empty and holds no config.json; use an empty "
            "or new directory"
        )
    config_lib.save(config, config.model_dir)


def _log_start(config: config_lib.TrainConfig, steps: int, replicas: int) -> None:
    logging.info(
        "train: %s, method %s, %d steps of %d pairs + %d uniform items, %d replica(s)",
        config.model_dir,
        config.method,
        steps,
        config.batch_size,
        config.effective_ssl_batch_size,
        replicas,
    )


def _count_mask_patterns(model, steps: int, summary: dict) -> None:
    """Collapsed masks (a handful of patterns) mean CFM is not varying its views."""
    if model.masker is None or model.masker.pattern not in ("cfm", "rfm", "rfm_no_compl"):
        return
    summary["distinct_mask_patterns"] = model.masker.distinct_patterns(min(steps, 1000))
    logging.info(
        "train: %d distinct masking patterns in the first %d steps",
        summary["distinct_mask_patterns"],
        min(steps, 1000),
    )


def _already_finished(config, blend_config, data_dir, model, steps: int) -> dict:
    """A finished run's summary; its blend chosen again first if it was chosen with other
    blend options."""
    summary = summary_lib.read(config.model_dir, steps)
    if _blend_is_stale(config, blend_config):
        logging.info("train: %s already finished; choosing its blend again", config.model_dir)
        _choose_blend(Validator(config, data_dir), model, config, blend_config, summary)
        summary_lib.write(config.model_dir, summary)
    else:
        logging.info("train: %s already finished; nothing to do", config.model_dir)
    return {**summary, "already_finished": True}


def _blend_is_stale(config: config_lib.TrainConfig, blend_config: BlendConfig) -> bool:
    """A finished run's blend.json chosen with other blend options."""
    path = os.path.join(config.model_dir, blend_lib.FILE)
    return (
        blend_config.choose_popularity_prior
        and os.path.exists(path)
        and blend_choice.is_stale(config.model_dir, blend_config)
    )


def _choose_blend(validator: Validator, model, config, blend_config, summary: dict) -> None:
    """The blends chosen on validation from the best weights, into blend.json and `summary`."""
    validation.restore_best(model, config.model_dir)
    queries, items = validator.embed(model)
    corpus = evaluator.corpus_of(validator.data_dir, validator.data, queries, items)
    choice = blend_choice.choose(corpus, validator.data, blend_config, validator.data_dir)
    blend_choice.save(config.model_dir, choice, corpus)
    largest = choice["blends"][max(choice["blends"], key=int)]
    summary["blends"] = choice["blends"]
    summary["blend"] = largest
    summary["popularity_prior"] = largest["popularity_prior"]
    chosen = blend_lib.Blends.from_json(choice["blends"]).describe()
    logging.info("train: blends chosen on validation (blend.json): %s", chosen)
