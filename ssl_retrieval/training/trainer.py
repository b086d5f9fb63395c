"""The training loop: tf.distribute, checkpoints, resuming, TensorBoard, progress.

`run(config)` is what `python -m ssl_retrieval.train` calls and what tests call directly.

Resuming: checkpoints hold the model, the optimizer and the step. A rerun of the same command
restores the latest one and rebuilds the input streams skipping the batches already trained on,
so it sees the same data and, augmentations being stateless functions of (seed, step), the same
augmentations; a kill loses at most `checkpoint_every` steps.

Model selection: with `validate_every`, the run evaluates Recall@50 over the whole corpus on a
fixed sample of validation queries every that many steps (`<model_dir>/validation.jsonl`), keeps
the best weights in `<model_dir>/best/` (what evaluation and export load), and with `patience`
stops after that many validations without improvement: the epoch budget becomes a maximum.
With `weight_averaging`, what is validated and kept is the moving average of the weights
(training/averaging.py), checkpointed beside them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time

import numpy as np

from ssl_retrieval import atomic
from ssl_retrieval import config as config_lib
from ssl_retrieval import data as data_lib
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.evaluation import blend_choice, evaluator
from ssl_retrieval.model import two_tower as model_lib
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking import topk
from ssl_retrieval.ranking.config import BlendConfig
from ssl_retrieval.training import averaging, distribute, optimizers


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


def validation_interval(config: config_lib.TrainConfig, schema: schema_lib.Schema) -> int:
    """Steps between validations: --validate_every, raised on large data so that an epoch has
    at most --max_validations_per_epoch of them (a validation embeds the whole corpus: at 1M
    items, every 100 steps would spend more time validating than training)."""
    if not config.validate_every or not config.max_validations_per_epoch:
        return config.validate_every
    per_epoch = schema.counts.get("train_pairs", 0) // config.batch_size
    return max(config.validate_every, math.ceil(per_epoch / config.max_validations_per_epoch))


def make_optimizer(config: config_lib.TrainConfig):
    return optimizers.make(config.optimizer, config.learning_rate)


def _prepare_model_dir(config: config_lib.TrainConfig, steps: int) -> None:
    path = config_lib.path(config.model_dir)
    if os.path.exists(path):
        previous = config_lib.load(config.model_dir)
        changed = config.differences(previous)
        budget = [k for k in changed if k in config_lib.BUDGET_FIELDS]
        if len(budget) == len(changed) and not config.overwrite:
            # Also with nothing changed: a reopen an earlier call did not make (its config is
            # saved with the new budget already).
            _extend_budget(config, steps)
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


def _extend_budget(config: config_lib.TrainConfig, steps: int) -> None:
    """A run given another step budget (`steps`): the same run when the budget never bound it;
    a finished run that used its whole budget is reopened to train on up to the new one."""
    summary_path = os.path.join(config.model_dir, "train_metrics.json")
    summary = _read_summary(config.model_dir, steps) if os.path.exists(summary_path) else {}
    trained = summary.get("steps") or _latest_step(config.model_dir)
    if trained > steps:
        raise ValueError(
            f"{config.model_dir} has trained {trained} steps, more than the {steps} its new "
            "--epochs/--train_steps allow; use another --model_dir, or --overwrite"
        )
    used_budget = config_lib.used_whole_budget(
        summary.get("steps"), summary.get("max_steps"), summary.get("stopped_early")
    )
    # Unknown (a summary from before early stopping): it trained to its budget.
    if summary and used_budget is not False and trained < steps:
        logging.info(
            "train: %s used its budget of %d steps; going on to %d",
            config.model_dir,
            trained,
            steps,
        )
        os.remove(summary_path)  # unfinished again: it resumes from its last checkpoint


def _latest_step(model_dir: str) -> int:
    prefixes = _checkpoint_prefixes(os.path.join(model_dir, "checkpoints"))
    return prefixes[0][0] if prefixes else 0


VALIDATION_METRIC = "recall@50"
VALIDATION_LOG = "validation.jsonl"
BEST_DIR = "best"


# Corpora up to this size are read once and kept in memory for the validations of a run (the
# Debian corpus, 63k items, read in 0.4 to 0.7 s each time; a validation took 6 s, loaded).
_CACHED_CORPUS_ITEMS = 250_000


class Validator:
    """Recall@50 of the current weights on a fixed sample of validation queries."""

    def __init__(self, config: config_lib.TrainConfig, data_dir: DataDir | None = None):
        self._evaluation = evaluator
        self._data_dir = DataDir.of(data_dir or config.data_dir)
        data = evaluator.load_eval_data(self._data_dir, "validation")
        self.data = evaluator.sample_queries(data, config.validation_queries, seed=0)
        self._functions = {}
        self._batches = None
        if self.data.num_items <= _CACHED_CORPUS_ITEMS:
            self._batches = list(data_lib.items_dataset(self._data_dir, 4096))

    def embed(self, model):
        """(query, item) tower embeddings of the corpus; of the query tower, only the rows of
        the validation queries (the rest are zero: nothing reads them)."""
        if id(model) not in self._functions:
            self._functions[id(model)] = (
                tf.function(model.query_tower, reduce_retracing=True),
                tf.function(model.item_tower, reduce_retracing=True),
            )
        return self._evaluation.embed_corpus(
            model,
            self._data_dir,
            functions=self._functions[id(model)],
            query_rows=np.unique(self.data.eval_query),
            batches=self._batches,
        )

    @property
    def data_dir(self) -> DataDir:
        return self._data_dir

    def evaluate(self, queries, items) -> dict:
        scorer = topk.embedding_scorer(queries, items)
        return self._evaluation.evaluate(self.data, scorer, ks=(10, 50))

    def __call__(self, model) -> dict:
        return self.evaluate(*self.embed(model))


def _read_validations(model_dir: str) -> list[dict]:
    return atomic.read_jsonl(os.path.join(model_dir, VALIDATION_LOG), missing_ok=True)


def _validations_since_best(history: list[dict]) -> tuple[float, int]:
    best, since = -1.0, 0
    for record in history:
        if record["value"] > best:
            best, since = record["value"], 0
        else:
            since += 1
    return best, since


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
    schema = data_dir.schema
    config.validate(schema.names)
    strategy = distribute.get_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    for flag, value in (
        ("--batch_size", config.batch_size),
        ("--ssl_batch_size", config.effective_ssl_batch_size),
    ):
        if value % replicas:
            raise ValueError(f"{flag}={value} must be divisible by the {replicas} replicas")
    steps = total_steps(config, schema)
    _prepare_model_dir(config, steps)
    tf.keras.utils.set_random_seed(config.seed)  # initialisation; data and augmentations are seeded

    with strategy.scope():
        model = model_lib.build_model(config, data_dir)
        optimizer = make_optimizer(config)
        model.optimizer = optimizer
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    use_newest_readable_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(config.model_dir, "checkpoints"), max_to_keep=3
    )
    start_step = 0
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        start_step = int(optimizer.iterations.numpy())
        logging.info("train: resuming from step %d (%s)", start_step, manager.latest_checkpoint)
    finished = os.path.exists(os.path.join(config.model_dir, "train_metrics.json"))
    if start_step >= steps or finished:
        if _blend_is_stale(config, blend_config):
            logging.info("train: %s already finished; choosing its blend again", config.model_dir)
            return _choose_blend_again(config, blend_config, data_dir, model, steps)
        logging.info("train: %s already finished; nothing to do", config.model_dir)
        return {**_read_summary(config.model_dir, steps), "already_finished": True}
    validator = None
    if config.validate_every and not schema.counts.get("validation_pairs"):
        logging.warning(
            "train: %s has no validation pairs (preprocess with --validation_fraction > 0): "
            "training without model selection or a blend, --validate_every ignored",
            config.data_dir,
        )
    elif config.validate_every:
        validator = Validator(config, data_dir)
    validate_every = validation_interval(config, schema)
    if validator is not None and validate_every != config.validate_every:
        logging.info(
            "train: validating every %d steps (--max_validations_per_epoch=%d)",
            validate_every,
            config.max_validations_per_epoch,
        )
    history = _read_validations(config.model_dir)
    # Validations after the checkpoint we resume from are redone.
    history = [r for r in history if r["step"] <= start_step]
    best_value, since_best = _validations_since_best(history)
    best_manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model), os.path.join(config.model_dir, BEST_DIR), max_to_keep=1
    )
    stopped_early = False

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
    iterator = iter(dataset)

    def step_fn(inputs):
        with tf.GradientTape() as tape:
            total, main, aux = model.compute_losses(inputs, training=True)
        variables = model.trainable_variables
        gradients = tape.gradient(total, variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        )
        return total, main, aux

    @tf.function
    def train_step(it):
        per_replica = strategy.run(step_fn, args=(next(it),))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in per_replica]

    # --weight_averaging: made after the first step, when the weights exist (creating them
    # earlier would change the order of initialisation, and so the seed's weights).
    average = None

    def averaged():
        return average.swapped() if average is not None else contextlib.nullcontext()

    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "logs"))
    examples_per_step = config.batch_size
    started = time.time()
    window_start, window_steps = time.time(), 0
    step = start_step
    losses = (float("nan"),) * 3
    logging.info(
        "train: %s, method %s, %d steps of %d pairs + %d uniform items, %d replica(s)",
        config.model_dir,
        config.method,
        steps,
        config.batch_size,
        config.effective_ssl_batch_size,
        replicas,
    )
    while step < steps:
        values = train_step(iterator)
        step += 1
        window_steps += 1
        if config.weight_averaging and average is None:
            average = _start_average(config, strategy, model, checkpoint)
        if average is not None and step % config.weight_averaging_every == 0:
            average.update()
        if step % config.log_every == 0 or step == steps:
            losses = tuple(float(v.numpy()) for v in values)
            if not math.isfinite(losses[0]):
                raise ValueError(
                    f"loss is {losses[0]} at step {step}; lower --learning_rate or check the data"
                )
            rate = window_steps * examples_per_step / max(time.time() - window_start, 1e-9)
            with writer.as_default(step=step):
                tf.summary.scalar("loss/total", losses[0])
                tf.summary.scalar("loss/main", losses[1])
                tf.summary.scalar("loss/auxiliary", losses[2])
                tf.summary.scalar("examples_per_second", rate)
            logging.info(
                "train: step %d/%d (%.0f%%) loss %.4f main %.4f aux %.4f, %.0f examples/s",
                step,
                steps,
                100.0 * step / steps,
                *losses,
                rate,
            )
            window_start, window_steps = time.time(), 0
        if validator is not None and (step % validate_every == 0 or step == steps):
            with averaged():
                metrics = validator(model)
                value = metrics["all"][VALIDATION_METRIC]
                improved = value > best_value
                if improved:
                    best_value, since_best = value, 0
                    best_manager.save(checkpoint_number=step)
                else:
                    since_best += 1
            history.append({"step": step, "value": value, "metrics": metrics})
            _write_lines(os.path.join(config.model_dir, VALIDATION_LOG), history)
            logging.info(
                "train: step %d validation %s %.4f (best %.4f%s)",
                step,
                VALIDATION_METRIC,
                value,
                best_value,
                ", saved" if improved else f", {since_best} without improvement",
            )
            with writer.as_default(step=step):
                tf.summary.scalar(f"validation/{VALIDATION_METRIC}", value)
            # Patience that runs out at the budget's last step is the budget's end: with a
            # larger budget the run may go on (that validation is an extra one when the budget
            # is not a multiple of the interval), so a raised cap reopens it.
            if config.patience and since_best >= config.patience and step < steps:
                logging.info(
                    "train: stopping early at step %d (patience %d)", step, config.patience
                )
                stopped_early = True
        if step % config.checkpoint_every == 0 or step == steps or stopped_early:
            manager.save(checkpoint_number=step)
        if stopped_early:
            break
    seconds = time.time() - started
    if validator is None and average is not None:
        # Evaluation and export load best/ when it exists: here, the average of the last steps.
        with averaged():
            best_manager.save(checkpoint_number=step)
    summary = {
        "steps": step,
        "max_steps": steps,
        "stopped_early": stopped_early,
        "resumed_from_step": start_step,
        "final_loss": losses[0],
        "final_main_loss": losses[1],
        "final_auxiliary_loss": losses[2],
        "examples_per_second": (steps - start_step) * examples_per_step / max(seconds, 1e-9),
        "seconds": seconds,
        "method": config.method,
    }
    if history:
        best = max(history, key=lambda r: r["value"])
        summary["best_step"] = best["step"]
        summary[f"best_validation_{VALIDATION_METRIC}"] = best["value"]
    if validator is not None and blend_config.choose_popularity_prior and history:
        _choose_blend(validator, model, config, blend_config, summary)
    if model.masker is not None and model.masker.pattern in ("cfm", "rfm", "rfm_no_compl"):
        # Collapsed masks (a handful of patterns) mean CFM is not varying its views.
        summary["distinct_mask_patterns"] = model.masker.distinct_patterns(min(step, 1000))
        logging.info(
            "train: %d distinct masking patterns in the first %d steps",
            summary["distinct_mask_patterns"],
            min(step, 1000),
        )
    _write_summary(config.model_dir, summary)
    return summary


_write_lines = atomic.write_jsonl


def _start_average(config, strategy, model, checkpoint):
    """The moving average of the weights, tracked by `checkpoint`. A resumed run's averages are
    restored as it is attached: `checkpoint` was restored from the run's latest checkpoint, and
    TensorFlow restores objects added to it later (deferred restoration)."""
    with strategy.scope():
        average = averaging.WeightAverage(
            model.trainable_variables, config.weight_averaging, config.weight_averaging_every
        )
    checkpoint.weight_average = average
    return average


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
    best = tf.train.latest_checkpoint(os.path.join(config.model_dir, BEST_DIR))
    if best:
        tf.train.Checkpoint(model=model).restore(best).expect_partial()
    queries, items = validator.embed(model)
    corpus = evaluator.corpus_of(validator.data_dir, validator.data, queries, items)
    choice = blend_choice.choose(corpus, validator.data, blend_config, validator.data_dir)
    blend_lib.save(config.model_dir, choice)
    largest = choice["blends"][max(choice["blends"], key=int)]
    summary["blends"] = choice["blends"]
    summary["blend"] = largest
    summary["popularity_prior"] = largest["popularity_prior"]
    logging.info("train: blends chosen on validation %s", choice["blends"])


def _choose_blend_again(config, blend_config, data_dir, model, steps: int) -> dict:
    """A finished run's blend chosen with the current blend options; its summary updated."""
    summary = _read_summary(config.model_dir, steps)
    _choose_blend(Validator(config, data_dir), model, config, blend_config, summary)
    _write_summary(config.model_dir, summary)
    return {**summary, "already_finished": True}


def _write_summary(model_dir: str, summary: dict) -> None:
    atomic.write_json(
        os.path.join(model_dir, "train_metrics.json"), summary, sort_keys=False, newline=False
    )


def _read_summary(model_dir: str, steps: int) -> dict:
    """The finished run's train_metrics.json (what `run` returns has "already_finished")."""
    path = os.path.join(model_dir, "train_metrics.json")
    if os.path.exists(path):
        with open(path) as f:
            summary = json.load(f)
    else:
        summary = {"steps": steps}
    return summary


def _checkpoint_prefixes(checkpoint_dir: str) -> list[tuple[int, str]]:
    """(step, prefix `<dir>/ckpt-<step>`) of the checkpoints on disk, newest first.

    From the files, not from the `checkpoint` state file, which can itself be damaged.
    """
    found = []
    for index in tf.io.gfile.glob(os.path.join(checkpoint_dir, "ckpt-*.index")):
        prefix = index[: -len(".index")]
        step = prefix.rsplit("-", 1)[1]
        if step.isascii() and step.isdigit():
            found.append((int(step), prefix))
    return sorted(found, reverse=True)


def _unreadable(prefix: str) -> str | None:
    """Why the checkpoint at `prefix` cannot be read (None if every tensor reads back).

    Reading every tensor checks its checksum, so a truncated, emptied or overwritten file is
    caught here rather than as a raw error at the first training step (Keras creates most
    variables after the restore, so restoring them is deferred until then).
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001  (the C++ reader raises IndexError, OpError, ...)
        text = (getattr(e, "message", None) or str(e)).strip()
        return (text.splitlines()[0] if text else type(e).__name__)[:300]
    return None


def use_newest_readable_checkpoint(checkpoint_dir: str) -> str | None:
    """Points the checkpoint state file at the newest checkpoint that reads, and returns it.

    A newer checkpoint that does not read is named in a warning; its files stay where they are
    (the save at its step replaces them). A missing or damaged state file is rewritten too.
    None when there is no checkpoint.

    Raises:
      ValueError: checkpoints exist and none reads (one line naming the newest one).
    """
    found = _checkpoint_prefixes(checkpoint_dir)
    failures = []
    for step, prefix in found:
        reason = _unreadable(prefix)
        if reason is not None:
            failures.append((prefix, reason))
            logging.warning(
                "WARNING: train: checkpoint %s is unreadable (%s); trying an older one",
                prefix,
                reason,
            )
            continue
        try:
            state = tf.train.get_checkpoint_state(checkpoint_dir)
        except Exception:  # noqa: BLE001  (a damaged state file is rewritten below)
            state = None
        if state is None or os.path.basename(state.model_checkpoint_path) != os.path.basename(
            prefix
        ):
            older = [os.path.basename(p) for s, p in reversed(found) if s <= step]
            tf.compat.v1.train.update_checkpoint_state(
                checkpoint_dir, os.path.basename(prefix), all_model_checkpoint_paths=older
            )
        return prefix
    if failures:
        prefix, reason = failures[0]
        raise ValueError(
            f"{prefix} is unreadable ({reason}) and so are the {len(failures) - 1} older "
            f"checkpoint(s) in {checkpoint_dir}; move them away to start again"
        )
    return None
