"""Model selection: validation, the best weights and early stopping.

With --validate_every, the run evaluates Recall@50 over the whole corpus on a fixed sample of
validation queries every that many steps (raised on large data, `validation_interval`) and at
the budget's last step, appends it to `<model_dir>/validation.jsonl`, keeps the best weights in
`<model_dir>/best/` (what evaluation, the blend's choice and export load), and with --patience
stops after that many validations without improvement: the epoch budget becomes a maximum. With
--weight_averaging, what is validated and kept is the average (training/averaging.py); without
validation, best/ holds the average of the last steps.

`ModelSelection` is that part of the training loop; it alone writes validation.jsonl and best/.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ssl_retrieval import atomic
from ssl_retrieval import config as config_lib
from ssl_retrieval import data as data_lib
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.evaluation import evaluator
from ssl_retrieval.ranking import topk
from ssl_retrieval.training.averaging import Averaging
from ssl_retrieval.training.progress import Callback, Progress

VALIDATION_METRIC = "recall@50"
VALIDATION_LOG = "validation.jsonl"
BEST_DIR = "best"

# Corpora up to this size are read once and kept in memory for the validations of a run (the
# Debian corpus, 63k items, read in 0.4 to 0.7 s each time; a validation took 6 s, loaded).
_CACHED_CORPUS_ITEMS = 250_000


def validation_interval(config: config_lib.TrainConfig, schema: schema_lib.Schema) -> int:
    """Steps between validations: --validate_every, raised on large data so that an epoch has
    at most --max_validations_per_epoch of them (a validation embeds the whole corpus: at 1M
    items, every 100 steps would spend more time validating than training)."""
    if not config.validate_every or not config.max_validations_per_epoch:
        return config.validate_every
    per_epoch = schema.counts.get("train_pairs", 0) // config.batch_size
    return max(config.validate_every, math.ceil(per_epoch / config.max_validations_per_epoch))


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


def read_validations(model_dir: str) -> list[dict]:
    """The records of `<model_dir>/validation.jsonl` ([] when there is none)."""
    return atomic.read_jsonl(os.path.join(model_dir, VALIDATION_LOG), missing_ok=True)


def _validations_since_best(history: list[dict]) -> tuple[float, int]:
    best, since = -1.0, 0
    for record in history:
        if record["value"] > best:
            best, since = record["value"], 0
        else:
            since += 1
    return best, since


def _make_validator(config: config_lib.TrainConfig, data_dir: DataDir) -> Validator | None:
    """The run's validator; None without --validate_every or without validation pairs."""
    if not config.validate_every:
        return None
    if not data_dir.schema.counts.get("validation_pairs"):
        logging.warning(
            "train: %s has no validation pairs (preprocess with --validation_fraction > 0): "
            "training without model selection or a blend, --validate_every ignored",
            config.data_dir,
        )
        return None
    return Validator(config, data_dir)


class ModelSelection(Callback):
    """Validation, the best weights and early stopping, as a part of the training loop.

    Attributes:
      validator: the `Validator` (None: this run does not validate).
      history: the validation records of the run, those of a resumed run after the checkpoint
        it resumes from left out (they are redone).
    """

    def __init__(
        self,
        config: config_lib.TrainConfig,
        data_dir: DataDir,
        model,
        start_step: int,
        writer,
        weights: Averaging,
    ):
        self.validator = _make_validator(config, data_dir)
        self._every = validation_interval(config, data_dir.schema)
        if self.validator is not None and self._every != config.validate_every:
            logging.info(
                "train: validating every %d steps (--max_validations_per_epoch=%d)",
                self._every,
                config.max_validations_per_epoch,
            )
        self.history = [r for r in read_validations(config.model_dir) if r["step"] <= start_step]
        self._best_value, self._since_best = _validations_since_best(self.history)
        self._best = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model),
            os.path.join(config.model_dir, BEST_DIR),
            max_to_keep=1,
        )
        self._log_path = os.path.join(config.model_dir, VALIDATION_LOG)
        self._patience = config.patience
        self._model, self._writer, self._weights = model, writer, weights

    def on_step_end(self, progress: Progress) -> None:
        """Validates when due; saves the weights if they are the best so far; stops the loop
        (`progress.stop`) when --patience validations went by without improvement."""
        step = progress.step
        if self.validator is None or not (step % self._every == 0 or progress.last):
            return
        with self._weights.swapped():
            metrics = self.validator(self._model)
            value = metrics["all"][VALIDATION_METRIC]
            improved = value > self._best_value
            if improved:
                self._best_value, self._since_best = value, 0
                self._best.save(checkpoint_number=step)
            else:
                self._since_best += 1
        self.history.append({"step": step, "value": value, "metrics": metrics})
        atomic.write_jsonl(self._log_path, self.history)
        logging.info(
            "train: step %d validation %s %.4f (best %.4f%s)",
            step,
            VALIDATION_METRIC,
            value,
            self._best_value,
            ", saved" if improved else f", {self._since_best} without improvement",
        )
        with self._writer.as_default(step=step):
            tf.summary.scalar(f"validation/{VALIDATION_METRIC}", value)
        # Patience that runs out at the budget's last step is the budget's end: with a larger
        # budget the run may go on (that validation is an extra one when the budget is not a
        # multiple of the interval), so a raised cap reopens it.
        if self._patience and self._since_best >= self._patience and step < progress.steps:
            logging.info("train: stopping early at step %d (patience %d)", step, self._patience)
            progress.stop = True

    def on_train_end(self, progress: Progress) -> None:
        if self.validator is None and self._weights.average is not None:
            # Evaluation and export load best/ when it exists: here, the average of the last steps.
            with self._weights.swapped():
                self._best.save(checkpoint_number=progress.step)

    @property
    def validated(self) -> bool:
        """The run validated (a validator and at least one validation)."""
        return self.validator is not None and bool(self.history)

    def best(self) -> dict:
        """The summary's fields of the best validation ({} without one)."""
        if not self.history:
            return {}
        best = max(self.history, key=lambda r: r["value"])
        return {"best_step": best["step"], f"best_validation_{VALIDATION_METRIC}": best["value"]}


def restore_best(model, model_dir: str) -> None:
    """Loads the best weights of `<model_dir>/best/` into `model` (if there are any)."""
    best = tf.train.latest_checkpoint(os.path.join(model_dir, BEST_DIR))
    if best:
        tf.train.Checkpoint(model=model).restore(best).expect_partial()
