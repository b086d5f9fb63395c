r"""Trains the two-tower model with the method's self-supervised head.

  python -m ssl_retrieval.train --flagfile=configs/debian_cfm.cfg
  python -m ssl_retrieval.train --flagfile=configs/debian_cfm.cfg --seed=2 \
      --model_dir=runs/debian/models/cfm_s2      # later flags override the flagfile

Rerunning the same command resumes from the last checkpoint; a finished run is a no-op.
Outputs in --model_dir: config.json (the resolved config), checkpoints/, logs/ (TensorBoard),
train_metrics.json.
"""

import logging
import sys

from absl import app, flags

from ssl_retrieval import config as config_lib

F = flags
DATA_DIR = F.DEFINE_string(
    "data_dir", None, "Preprocessed data dir (python -m pipelines.preprocess)."
)
MODEL_DIR = F.DEFINE_string("model_dir", None, "Where checkpoints, logs and config.json go.")
METHOD = F.DEFINE_enum(
    "method",
    "baseline",
    config_lib.METHODS,
    "baseline: two towers only. fd: feature dropout on the supervised item tower. so: spread-out "
    "regulariser on uniform items. cfm: SSL with correlated feature masking + value dropout (the "
    "paper). rfm / rfm_no_compl: random complementary / independent masks. cfm_no_dropout. "
    "no_masking: value dropout only. fm: fixed complementary feature sets with separate heads "
    "(earlier paper). fd_ssl: two feature-dropout views (earlier paper). fd_ssl+fm: both.",
)
BATCH_SIZE = F.DEFINE_integer("batch_size", 1024, "Global batch of pairs (the in-batch negatives).")
SSL_BATCH_SIZE = F.DEFINE_integer(
    "ssl_batch_size", None, "Global batch of uniform items for the SSL loss (default: batch_size)."
)
LEARNING_RATE = F.DEFINE_float("learning_rate", 0.1, "Learning rate.")
OPTIMIZER = F.DEFINE_enum(
    "optimizer", "adagrad", config_lib.OPTIMIZERS, "Optimizer (paper: adagrad)."
)
EPOCHS = F.DEFINE_float(
    "epochs", 5.0, "Passes over the training pairs (ignored with --train_steps)."
)
TRAIN_STEPS = F.DEFINE_integer("train_steps", None, "Training steps; overrides --epochs.")
EMBEDDING_DIM = F.DEFINE_integer(
    "embedding_dim", 64, "Feature embedding size (schema may override)."
)
HIDDEN_LAYERS = F.DEFINE_list(
    "hidden_layers",
    ["1024", "128"],
    "Tower MLP sizes; the last is the embedding size (paper 1024,128).",
)
SHARE_TOWERS = F.DEFINE_bool("share_towers", False, "One MLP for queries and items.")
TEMPERATURE = F.DEFINE_float("temperature", 0.07, "Main batch-softmax temperature (eq. 6).")
SSL_TEMPERATURE = F.DEFINE_float(
    "ssl_temperature", 0.07, "SSL (and softmax spread-out) temperature."
)
ALPHA = F.DEFINE_float("alpha", 0.3, "Weight of the SSL / spread-out loss (eq. 5).")
DROPOUT_RATE = F.DEFINE_float(
    "dropout_rate", 0.3, "Value dropout in SSL views; feature dropout rate for fd and fd_ssl."
)
MASK_SIZE = F.DEFINE_integer(
    "mask_size", None, "Features masked in one SSL view (default: half of them, seed included)."
)
SO_LOSS = F.DEFINE_enum(
    "so_loss", "softmax", config_lib.SO_LOSSES, "Spread-out form for --method=so."
)
FM_FEATURES = F.DEFINE_list(
    "fm_features", [], "fm: the features one view keeps (the other keeps the rest)."
)
FM_HIDDEN_LAYERS = F.DEFINE_list(
    "fm_hidden_layers", ["128"], "fm: sizes of the two separate heads."
)
SAMPLING_CORRECTION = F.DEFINE_bool(
    "sampling_correction", False, "logQ correction of in-batch negatives by candidate frequency."
)
CORRECTION_STRENGTH = F.DEFINE_float(
    "correction_strength",
    1.0,
    "Tempered logQ: subtract strength x log(expected count) from each negative's logit "
    "(1 = the full correction, 0 = none). Only with --sampling_correction.",
)
MIXED_NEGATIVES = F.DEFINE_bool(
    "mixed_negatives",
    False,
    "Mixed negative sampling (Yang et al. 2020): the batch of uniform corpus items is added to "
    "the in-batch negatives of the main loss, so tail items are negatives too.",
)
SYMMETRIC_LOSS = F.DEFINE_bool(
    "symmetric_loss",
    False,
    "Also train each pair in the reverse direction (candidate -> query): links as undirected.",
)
ID_MIN_COUNT = F.DEFINE_integer(
    "id_min_count",
    0,
    "Items in fewer training pairs (as query or candidate) than this get no id embedding of "
    "their own: the id falls back to its learned default and the features carry the item. "
    "0 = every corpus id has one (untrained for cold items).",
)
ID_DROPOUT = F.DEFINE_float(
    "id_dropout",
    0.0,
    "Share of training examples whose id is replaced by its default embedding, so the towers "
    "learn to represent items from their features (what cold items have).",
)
MI_NORMALIZATION = F.DEFINE_enum(
    "mi_normalization",
    "none",
    config_lib.MI_NORMALIZATIONS,
    "CFM ranks correlates by mutual information: none (raw, the paper), min I/min(Hi,Hj), "
    "mean 2I/(Hi+Hj), sqrt I/sqrt(HiHj).",
)
CFM_EXCLUDE_ID = F.DEFINE_bool(
    "cfm_exclude_id",
    False,
    "Never pick the id feature as a correlate in CFM (its raw MI with any feature is maximal).",
)
VALIDATE_EVERY = F.DEFINE_integer(
    "validate_every",
    0,
    "Steps between validation evaluations (Recall@50 over the whole corpus on the validation "
    "split); the best checkpoint is kept in <model_dir>/best. 0 = never.",
)
VALIDATION_QUERIES = F.DEFINE_integer(
    "validation_queries", 2000, "Validation queries evaluated each time (a fixed random sample)."
)
PATIENCE = F.DEFINE_integer(
    "patience",
    0,
    "Stop after this many validations without a better Recall@50 (0 = train all steps).",
)
CHOOSE_POPULARITY_PRIOR = F.DEFINE_bool(
    "choose_popularity_prior",
    True,
    "With --validate_every: after training, choose on validation how lists are ranked "
    "(blending.py): beta of the popularity prior cos + beta*log(1+count), the weight w of "
    "TF-IDF in the similar ranking cos + w*tfidf, and the share of slots each ranking fills "
    "(blend.json; used by evaluate and export unless they are told otherwise).",
)
BLEND_CONTENT_WEIGHTS = F.DEFINE_list(
    "blend_content_weights",
    ["0", "0.5", "1", "2"],
    "Grid of w (TF-IDF weight of the similar ranking) searched by --choose_popularity_prior.",
)
BLEND_PRIOR_SHARES = F.DEFINE_list(
    "blend_prior_shares",
    ["1", "0.5", "0.4", "0.3", "0.25", "0.2"],
    "Grid of the share of slots from the popular ranking searched by "
    "--choose_popularity_prior (1 = the popular ranking alone).",
)
BLEND_OBJECTIVE = F.DEFINE_enum(
    "blend_objective",
    "references",
    config_lib.BLEND_OBJECTIVES,
    "How the blend is chosen on validation: references = first at least as good as the best "
    "reference recommender (TopPopular, feature kNN, co-occurrence) on every slice, then the "
    "best mean Recall@50 over the all/head/tail/cold slices; slices = that mean alone.",
)
SEED = F.DEFINE_integer("seed", 0, "Seed of initialisation, shuffles and augmentations.")
STRATEGY = F.DEFINE_enum("strategy", "default", config_lib.STRATEGIES, "tf.distribute strategy.")
CROSS_REPLICA = F.DEFINE_bool(
    "cross_replica_negatives", True, "With several replicas, negatives are the global batch."
)
CHECKPOINT_EVERY = F.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
LOG_EVERY = F.DEFINE_integer(
    "log_every", 50, "Steps between progress lines and TensorBoard points."
)
OVERWRITE = F.DEFINE_bool("overwrite", False, "Delete a --model_dir holding a different run.")

F.mark_flags_as_required(["data_dir", "model_dir"])


def _ints(values, flag):
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"--{flag} must be integers, got {values}") from None


def _floats(values, flag):
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise ValueError(f"--{flag} must be numbers, got {values}") from None


def config_from_flags() -> config_lib.TrainConfig:
    return config_lib.TrainConfig(
        data_dir=DATA_DIR.value,
        model_dir=MODEL_DIR.value,
        method=METHOD.value,
        batch_size=BATCH_SIZE.value,
        ssl_batch_size=SSL_BATCH_SIZE.value,
        learning_rate=LEARNING_RATE.value,
        optimizer=OPTIMIZER.value,
        epochs=EPOCHS.value,
        train_steps=TRAIN_STEPS.value,
        embedding_dim=EMBEDDING_DIM.value,
        hidden_layers=_ints(HIDDEN_LAYERS.value, "hidden_layers"),
        share_towers=SHARE_TOWERS.value,
        temperature=TEMPERATURE.value,
        ssl_temperature=SSL_TEMPERATURE.value,
        alpha=ALPHA.value,
        dropout_rate=DROPOUT_RATE.value,
        mask_size=MASK_SIZE.value,
        so_loss=SO_LOSS.value,
        fm_features=tuple(FM_FEATURES.value),
        fm_hidden_layers=_ints(FM_HIDDEN_LAYERS.value, "fm_hidden_layers"),
        sampling_correction=SAMPLING_CORRECTION.value,
        correction_strength=CORRECTION_STRENGTH.value,
        mixed_negatives=MIXED_NEGATIVES.value,
        symmetric_loss=SYMMETRIC_LOSS.value,
        id_min_count=ID_MIN_COUNT.value,
        id_dropout=ID_DROPOUT.value,
        mi_normalization=MI_NORMALIZATION.value,
        cfm_exclude_id=CFM_EXCLUDE_ID.value,
        validate_every=VALIDATE_EVERY.value,
        validation_queries=VALIDATION_QUERIES.value,
        patience=PATIENCE.value,
        choose_popularity_prior=CHOOSE_POPULARITY_PRIOR.value,
        blend_content_weights=_floats(BLEND_CONTENT_WEIGHTS.value, "blend_content_weights"),
        blend_prior_shares=_floats(BLEND_PRIOR_SHARES.value, "blend_prior_shares"),
        blend_objective=BLEND_OBJECTIVE.value,
        seed=SEED.value,
        strategy=STRATEGY.value,
        cross_replica_negatives=CROSS_REPLICA.value,
        checkpoint_every=CHECKPOINT_EVERY.value,
        log_every=LOG_EVERY.value,
        overwrite=OVERWRITE.value,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    try:
        config = config_from_flags().validate()
        from ssl_retrieval import training  # noqa: PLC0415  (imports TensorFlow)

        summary = training.run(config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if summary.get("already_finished"):
        print(f"train: {MODEL_DIR.value} already finished ({summary['steps']} steps)")
    else:
        print(
            f"train: {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
            f"{summary['examples_per_second']:.0f} examples/s -> {MODEL_DIR.value}"
        )


if __name__ == "__main__":
    app.run(main)
