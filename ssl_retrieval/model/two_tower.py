"""The two-tower retrieval model with the self-supervised item-tower head (paper fig. 3).

Pieces:
  FeatureEncoder  the input layer, built from schema.json alone: per sparse feature a string
                  lookup, an embedding table and mean pooling; per dense feature a normalised
                  scalar times a learned vector; per feature a learned default embedding used
                  when the feature is masked, dropped or missing. One encoder (one set of tables)
                  serves the query tower, the item tower and both SSL views.
  MLP             hidden layers (ReLU) and a linear output, L2-normalised.
  Tower           encoder + MLP: a feature dict -> [B, d] unit vectors.
  SSLRetrievalModel  the tfrs.Model: main batch-softmax task + alpha * auxiliary loss (eq. 5),
                  the auxiliary loss made of the parts of `method` (see methods.py).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_recommenders as tfrs

from ssl_retrieval import config as config_lib
from ssl_retrieval import methods
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.model import augment, losses

METHODS = config_lib.METHODS


def _feature_config(f: schema_lib.Feature, data_dir: DataDir, keep_ids=None) -> dict:
    config = {"name": f.name, "kind": f.kind, "embedding_dim": f.embedding_dim}
    if f.is_sparse:
        vocabulary = data_dir.vocabulary(f.name)
        config.update(vocabulary=vocabulary, oov_buckets=f.oov_buckets or 1)
        if f.kind == schema_lib.ID and keep_ids is not None:
            config["vocabulary"] = [v for v in vocabulary if v in keep_ids]
            config["oov_as_missing"] = True
    else:
        config.update(transform=f.dense_transform, mean=f.mean or 0.0, std=f.std or 1.0)
    return config


def feature_configs(schema: schema_lib.Schema, data_dir, keep_ids=None) -> list[dict]:
    """Encoder configs (vocabularies inlined) from a preprocessed schema.

    Args:
      data_dir: a path or a `DataDir` (its vocabularies).
      keep_ids: optional set of ids that keep an embedding of their own; any other id is
        treated as missing (the id feature's default embedding).
    """
    data_dir = DataDir.of(data_dir)
    return [_feature_config(f, data_dir, keep_ids) for f in schema.features]


@tf.keras.utils.register_keras_serializable(package="ssl_retrieval")
class FeatureEncoder(tf.keras.layers.Layer):
    """Feature dict -> concatenated per-feature embeddings [B, sum of dims].

    Args:
      features: per feature, in schema order: {"name", "kind", "embedding_dim" (or None),
        "vocabulary" + "oov_buckets" (sparse) or "transform", "mean", "std" (dense)}. A sparse
        feature with "oov_as_missing": True drops out-of-vocabulary values, so a row with none
        left gets the default embedding (used for ids without an embedding of their own).
      embedding_dim: the size of features whose own `embedding_dim` is None.
    """

    def __init__(self, features: list[dict], embedding_dim: int = 64, **kwargs):
        super().__init__(**kwargs)
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if not features:
            raise ValueError("features must not be empty")
        self.features = [dict(f) for f in features]
        self.embedding_dim = int(embedding_dim)
        self.names = [f["name"] for f in self.features]
        self.dims = [f.get("embedding_dim") or self.embedding_dim for f in self.features]
        self._lookups = {}
        for f in self.features:
            if f["kind"] != schema_lib.DENSE:
                self._lookups[f["name"]] = tf.keras.layers.StringLookup(
                    vocabulary=f["vocabulary"] or ["<empty vocabulary>"],
                    num_oov_indices=f["oov_buckets"],
                    mask_token=None,
                    name=f"{f['name']}_lookup",
                )

    @property
    def num_features(self) -> int:
        return len(self.features)

    @property
    def output_dim(self) -> int:
        return sum(self.dims)

    def build(self, input_shape=None):
        self._tables = {}
        self._defaults = {}

        # A fresh initializer per weight: one shared instance would give every table the same values.
        def init():
            return tf.keras.initializers.TruncatedNormal(stddev=0.05)

        for f, dim in zip(self.features, self.dims, strict=True):
            name = f["name"]
            if f["kind"] == schema_lib.DENSE:
                rows = 1  # the dense feature's direction; its value scales it
            else:
                rows = self._lookups[name].vocabulary_size()
            self._tables[name] = self.add_weight(
                name=f"{name}_embedding", shape=[rows, dim], initializer=init()
            )
            self._defaults[name] = self.add_weight(
                name=f"{name}_default", shape=[dim], initializer=init()
            )
        super().build(input_shape)

    def lookup(self, name: str, values: tf.RaggedTensor) -> tf.RaggedTensor:
        """Raw string values -> vocabulary ids (same ragged structure)."""
        return values.with_flat_values(self._lookups[name](values.flat_values))

    def _pool(self, name: str, ids: tf.RaggedTensor):
        """Mean of the value embeddings -> ([B, dim], [B] bool: the row had no value)."""
        table = self._tables[name]
        vectors = tf.gather(table, ids.flat_values)
        sums = tf.math.unsorted_segment_sum(
            vectors, ids.value_rowids(), ids.nrows(out_type=tf.int64)
        )
        counts = tf.cast(ids.row_lengths(), vectors.dtype)
        pooled = sums / tf.maximum(counts, 1.0)[:, tf.newaxis]
        return pooled, tf.equal(counts, 0.0)

    def call(self, features, feature_mask=None, value_dropout=None, step=0, salt=0):
        """Args:
          features: {name: RaggedTensor [B, (n)] of strings (sparse) or [B] float (dense, NaN =
            missing)}.
          feature_mask: optional bool [k] or [B, k]; True -> the default embedding.
          value_dropout: optional `augment.ValueDropout` applied to multi-hot values first.
          step, salt: passed to `value_dropout`.

        Returns: [B, sum of dims].
        """
        outputs = []
        for index, f in enumerate(self.features):
            name = f["name"]
            value = features[name]
            if f["kind"] == schema_lib.DENSE:
                value = tf.cast(tf.reshape(value, [-1]), tf.float32)
                missing = tf.math.is_nan(value)
                x = tf.where(missing, 0.0, value)
                if f["transform"] == "log":
                    x = tf.math.log1p(tf.maximum(x, 0.0))
                z = (x - f["mean"]) / f["std"]
                z = tf.where(missing, 0.0, z)
                embedded = z[:, tf.newaxis] * self._tables[name][0][tf.newaxis, :]
            else:
                if not isinstance(value, tf.RaggedTensor):
                    value = tf.RaggedTensor.from_tensor(tf.reshape(value, [-1, 1]))
                if value_dropout is not None and f["kind"] == schema_lib.MULTI_HOT:
                    value = value_dropout(value, step, salt=salt * 100 + index)
                ids = self.lookup(name, value)
                if f.get("oov_as_missing"):
                    ids = tf.ragged.boolean_mask(
                        ids, ids.with_flat_values(ids.flat_values >= f["oov_buckets"])
                    )
                embedded, missing = self._pool(name, ids)
            use_default = missing
            if feature_mask is not None:
                mask = tf.convert_to_tensor(feature_mask)
                column = mask[index] if mask.shape.rank == 1 else mask[:, index]
                use_default = tf.logical_or(use_default, column)
            default = tf.broadcast_to(self._defaults[name], tf.shape(embedded))
            outputs.append(tf.where(use_default[:, tf.newaxis], default, embedded))
        return tf.concat(outputs, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "features": self.features,
            "embedding_dim": self.embedding_dim,
        }


@tf.keras.utils.register_keras_serializable(package="ssl_retrieval")
class MLP(tf.keras.layers.Layer):
    """Dense layers (ReLU between, the last linear), output L2-normalised [B, last size]."""

    def __init__(self, hidden_layers: list[int], **kwargs):
        super().__init__(**kwargs)
        if not hidden_layers or any(int(h) < 1 for h in hidden_layers):
            raise ValueError(f"hidden_layers must be positive sizes, got {hidden_layers}")
        self.hidden_layers = [int(h) for h in hidden_layers]
        self._dense = [
            tf.keras.layers.Dense(
                h, activation=None if i == len(self.hidden_layers) - 1 else "relu"
            )
            for i, h in enumerate(self.hidden_layers)
        ]

    def call(self, x):
        for layer in self._dense:
            x = layer(x)
        return tf.math.l2_normalize(x, axis=-1)

    def get_config(self):
        return {**super().get_config(), "hidden_layers": self.hidden_layers}


class Tower(tf.keras.layers.Layer):
    """Encoder + MLP: feature dict -> unit embeddings [B, d]. Shares the encoder it is given."""

    def __init__(self, encoder: FeatureEncoder, mlp: MLP, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.mlp = mlp

    def call(self, features, feature_mask=None, value_dropout=None, step=0, salt=0):
        x = self.encoder(
            features, feature_mask=feature_mask, value_dropout=value_dropout, step=step, salt=salt
        )
        return self.mlp(x)


class SSLRetrievalModel(tfrs.Model):
    """Two towers, the main retrieval task, and the method's auxiliary loss (eq. 5).

    Inputs to `compute_loss`: ({"query": features, "candidate": features, "weight": [B]},
    uniform item features [B_ssl]) - the pair stream zipped with the uniform item stream.

    Args:
      config: a `ssl_retrieval.config.TrainConfig`.
      encoder_features: `feature_configs(schema, data_dir)`.
      mutual_info: [k, k] feature correlation in schema order (cfm methods; raw or normalised
        mutual information, see `augment.correlation_matrix`).
      candidate_probability: optional (ids list, probabilities list) for logQ correction.
      num_items: corpus size (the uniform items' sampling probability, mixed negatives).
    """

    def __init__(
        self,
        config,
        encoder_features,
        mutual_info=None,
        candidate_probability=None,
        num_items: int | None = None,
    ):
        super().__init__()
        self.config = config
        self.encoder = FeatureEncoder(encoder_features, config.embedding_dim, name="encoder")
        k = self.encoder.num_features
        self.feature_names = self.encoder.names
        id_name = next(f["name"] for f in encoder_features if f["kind"] == schema_lib.ID)
        self.id_name = id_name
        self.id_index = self.feature_names.index(id_name)
        self.num_items = num_items
        query_mlp = MLP(config.hidden_layers, name="query_mlp")
        item_mlp = query_mlp if config.share_towers else MLP(config.hidden_layers, name="item_mlp")
        self.query_tower = Tower(self.encoder, query_mlp, name="query_tower")
        self.item_tower = Tower(self.encoder, item_mlp, name="item_tower")
        self.task = losses.ContrastiveSoftmax(
            config.temperature, cross_replica=config.cross_replica_negatives, name="main_task"
        )
        self.ssl_task = losses.ContrastiveSoftmax(
            config.ssl_temperature,
            remove_accidental_hits=True,
            cross_replica=config.cross_replica_negatives,
            name="ssl_task",
        )
        parts = methods.get(config.method)
        self.method_parts = parts
        self.masker = None
        self.value_dropout = None
        self.feature_dropout = None
        self.fm_masker = None
        if parts.masking is not None:
            self.masker = augment.FeatureMasker(
                k,
                parts.masking,
                mutual_info=mutual_info,
                mask_size=config.mask_size,
                seed=config.seed,
                unranked_features=[self.id_index] if config.cfm_exclude_id else None,
                # View A (the SSL softmax's query side) keeps the id, B drops it: B is what a
                # cold item is, retrieved by items that have their id.
                cold_start_feature=self.id_index if config.ssl_id_view == "cold_start" else None,
            )
            if parts.value_dropout:
                self.value_dropout = augment.ValueDropout(config.dropout_rate, seed=config.seed)
        if parts.uses_feature_dropout:
            self.feature_dropout = augment.FeatureDropout(k, config.dropout_rate, seed=config.seed)
        self.id_dropout = None
        if config.id_dropout > 0:
            self.id_dropout = augment.FeatureDropout(1, config.id_dropout, seed=config.seed + 7)
        if parts.fm:
            fixed = [self.feature_names.index(n) for n in config.fm_features]
            self.fm_masker = augment.FeatureMasker(k, "fm", fixed_features=fixed, seed=config.seed)
            # The earlier paper's FM task: separate MLP heads on the shared embeddings.
            self.fm_head_a = MLP(config.fm_hidden_layers, name="fm_head_a")
            self.fm_head_b = MLP(config.fm_hidden_layers, name="fm_head_b")
        self._probability_table = None
        if candidate_probability is not None:
            ids, probs = candidate_probability
            self._probability_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(ids, tf.string), tf.constant(probs, tf.float32)
                ),
                default_value=float(min(probs)) if len(probs) else 1.0,
            )

    def call(self, features):
        """Item embeddings [B, d] for a feature dict (the item tower)."""
        return self.item_tower(features)

    def _step(self):
        return self.optimizer.iterations if self.optimizer is not None else tf.constant(0, tf.int64)

    def auxiliary_loss(self, items, step):
        """alpha-free auxiliary loss on the uniform item batch (0 for baseline and fd).

        Each SSL task is eq. 3 with view A's embeddings as the queries and view B's as the
        candidates; with --ssl_id_view=cold_start A is the view with the id and B the one
        without (augment.FeatureMasker): an item with its id retrieves itself without it.
        """
        parts = self.method_parts
        zero = tf.constant(0.0)
        if not parts.has_auxiliary_loss:
            return zero
        item_ids = (
            items[self.id_name].flat_values
            if isinstance(items[self.id_name], tf.RaggedTensor)
            else items[self.id_name]
        )
        if parts.spread_out:
            z = self.item_tower(items)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = losses.spread_out_loss(z, self.config.so_loss, self.config.ssl_temperature)
            return loss / replicas
        total = zero
        if self.masker is not None:
            mask_a, mask_b = self.masker(step)
            z_a = self.item_tower(items, mask_a, self.value_dropout, step, salt=1)
            z_b = self.item_tower(items, mask_b, self.value_dropout, step, salt=2)
            total += self.ssl_task(z_a, z_b, candidate_ids=item_ids)
        if parts.fd_ssl:
            batch = tf.shape(item_ids)[0]
            z_a = self.item_tower(items, self.feature_dropout(batch, step, salt=1))
            z_b = self.item_tower(items, self.feature_dropout(batch, step, salt=2))
            total += self.ssl_task(z_a, z_b, candidate_ids=item_ids)
        if parts.fm:
            mask_a, mask_b = self.fm_masker(step)
            z_a = self.fm_head_a(self.encoder(items, feature_mask=mask_a))
            z_b = self.fm_head_b(self.encoder(items, feature_mask=mask_b))
            total += self.ssl_task(z_a, z_b, candidate_ids=item_ids)
        return total

    def _ids(self, features):
        ids = features[self.id_name]
        return ids.flat_values if isinstance(ids, tf.RaggedTensor) else ids

    def _id_mask(self, batch, step, salt: int):
        """[B, k] bool: the id column dropped for a random `id_dropout` share of the rows."""
        dropped = self.id_dropout(batch, step, salt=salt)  # [B, 1]
        column = tf.one_hot(
            self.id_index, self.encoder.num_features, on_value=True, off_value=False
        )
        return tf.logical_and(dropped, column[tf.newaxis, :])

    def _expected_counts(self, ids, batch, extra):
        """Expected count of each id among the negatives: batch * p(id) (+ extra / N, uniform
        items). Its log, scaled by --correction_strength, is the logQ correction."""
        count = tf.cast(batch, tf.float32) * self._probability_table.lookup(ids)
        if extra is not None:
            count += tf.cast(extra, tf.float32) / float(self.num_items)
        return tf.pow(count, self.config.correction_strength)

    def _main_loss(self, query, candidate, candidate_ids, weight, extra, extra_ids):
        probability = extra_probability = None
        if self._probability_table is not None:
            batch = tf.shape(candidate_ids)[0]
            extra_size = tf.shape(extra_ids)[0] if extra is not None else None
            probability = self._expected_counts(candidate_ids, batch, extra_size)
            if extra is not None:
                extra_probability = self._expected_counts(extra_ids, batch, extra_size)
        return self.task(
            query,
            candidate,
            sample_weight=weight,
            candidate_ids=candidate_ids,
            candidate_sampling_probability=probability,
            extra_embeddings=extra,
            extra_ids=extra_ids if extra is not None else None,
            extra_sampling_probability=extra_probability,
        )

    def compute_losses(self, inputs, training: bool = False):
        """-> (total, main, auxiliary) scalars, each reduced per the tf.distribute convention."""
        pairs, items = inputs
        step = self._step()
        batch = tf.shape(self._ids(pairs["query"]))[0]
        query_mask = candidate_mask = None
        if training and self.id_dropout is not None:
            query_mask = self._id_mask(batch, step, salt=20)
            candidate_mask = self._id_mask(batch, step, salt=21)
        if self.method_parts.feature_dropout and training:
            dropped = self.feature_dropout(batch, step, salt=0)
            candidate_mask = dropped if candidate_mask is None else candidate_mask | dropped
        query = self.query_tower(pairs["query"], query_mask)
        candidate = self.item_tower(pairs["candidate"], candidate_mask)
        query_ids, candidate_ids = self._ids(pairs["query"]), self._ids(pairs["candidate"])
        extra = extra_ids = None
        if self.config.mixed_negatives and training:
            extra, extra_ids = self.item_tower(items), self._ids(items)
        weight = pairs.get("weight")
        main = self._main_loss(query, candidate, candidate_ids, weight, extra, extra_ids)
        if self.config.symmetric_loss:
            if self.config.share_towers:
                reverse_query, reverse_candidate = candidate, query
            else:
                reverse_query = self.query_tower(pairs["candidate"], candidate_mask)
                reverse_candidate = self.item_tower(pairs["query"], query_mask)
            reverse = self._main_loss(
                reverse_query, reverse_candidate, query_ids, weight, extra, extra_ids
            )
            main = (main + reverse) / 2.0
        auxiliary = self.auxiliary_loss(items, step) if training else tf.constant(0.0)
        return main + self.config.alpha * auxiliary, main, auxiliary

    def compute_loss(self, inputs, training: bool = False):
        return self.compute_losses(inputs, training)[0]


def candidate_counts(data_dir) -> tuple[list[str], list[float], float]:
    """(ids, share of training pairs, total pairs) of each training candidate (logQ correction,
    popularity prior), from `DataDir.candidate_counts`."""
    ids, counts = DataDir.of(data_dir).candidate_counts
    total = float(np.sum(counts)) or 1.0
    return ids, [c / total for c in counts], total


def candidate_probabilities(data_dir) -> tuple[list[str], list[float]]:
    """Each training candidate's share of training pairs (for logQ correction)."""
    ids, shares, _ = candidate_counts(data_dir)
    return ids, shares


def build_model(config, data_dir=None) -> SSLRetrievalModel:
    """The model for `config` from the data dir's schema.json and mutual_info.json.

    `data_dir`: a path or a `DataDir`; default the config's."""
    from ssl_retrieval import data as data_lib  # noqa: PLC0415

    data_dir = DataDir.of(data_dir or config.data_dir)
    schema = data_dir.schema
    mi = data_dir.mutual_info
    probability = candidate_probabilities(data_dir) if config.sampling_correction else None
    keep_ids = None
    if config.id_min_count > 0:
        counts = data_lib.train_item_counts(data_dir, schema)
        keep_ids = {i for i, n in counts.items() if n >= config.id_min_count}
    correlation = augment.correlation_matrix(
        mi["mutual_information"],
        mi.get("entropy") or np.diag(mi["mutual_information"]),
        config.mi_normalization,
    )
    return SSLRetrievalModel(
        config,
        feature_configs(schema, data_dir, keep_ids),
        mutual_info=correlation.tolist(),
        candidate_probability=probability,
        num_items=schema.counts.get("items"),
    )


def load_from_model_dir(model_dir: str, data_dir=None) -> SSLRetrievalModel:
    """Rebuilds the model from `<model_dir>/config.json` and restores its latest checkpoint.

    Raises:
      ValueError: no config.json or no checkpoint in `model_dir`.
    """
    from ssl_retrieval import data as data_lib  # noqa: PLC0415

    config = config_lib.load(model_dir)
    data_dir = DataDir.of(data_dir or config.data_dir)
    model = build_model(config, data_dir)
    checkpoint_dir = os.path.join(model_dir, "checkpoints")
    # The best weights on validation, when the run validated; else the last ones.
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "best")) or (
        tf.train.latest_checkpoint(checkpoint_dir)
    )
    if latest is None:
        raise ValueError(f"{model_dir}: no checkpoint under {checkpoint_dir}; train first")
    # Build the variables with one tiny batch, then restore.
    sample = next(iter(data_lib.items_dataset(data_dir, 2)))
    model.query_tower(sample)
    model.item_tower(sample)
    checkpoint = tf.train.Checkpoint(model=model)
    checkpoint.restore(latest).expect_partial()
    return model


def embed_corpus(
    model, data_dir, batch_size: int = 4096, functions=None, query_rows=None, batches=None
):
    """(query tower, item tower) embeddings [N, d] of every corpus item, in corpus order.

    `functions`: optional (query_fn, item_fn) already wrapped in tf.function, so that repeated
    calls (validation during training) do not trace again.
    `query_rows`: optional sorted corpus indices; with two towers only those rows go through
    the query tower (the others are zero; shared towers embed every item once anyway).
    Validation asks for its 2,000 queries, not the whole corpus.
    `batches`: optional corpus batches already read (in corpus order), instead of reading them.
    """
    from ssl_retrieval import data as data_lib  # noqa: PLC0415

    query_fn, item_fn = functions or (
        tf.function(model.query_tower, reduce_retracing=True),
        tf.function(model.item_tower, reduce_retracing=True),
    )
    if batches is None:
        batches = data_lib.items_dataset(data_dir, batch_size)
    # Shared towers (the default recipe) are one function: embed once, not twice.
    shared = towers_are_shared(model)
    queries, items, start = [], [], 0
    for batch in batches:
        size = int(next(iter(batch.values())).shape[0])
        if not shared:
            items.append(item_fn(batch).numpy())
        if shared or query_rows is None:
            queries.append(query_fn(batch).numpy())
        else:
            local = query_rows[(query_rows >= start) & (query_rows < start + size)] - start
            rows = np.zeros_like(items[-1])  # both towers end in the same dimension
            if len(local):
                picked = {name: tf.gather(values, local) for name, values in batch.items()}
                rows[local] = query_fn(picked).numpy()
            queries.append(rows)
        start += size
    queries = np.concatenate(queries)
    return queries, (queries if shared else np.concatenate(items))


def towers_are_shared(model) -> bool:
    """Whether the query and item towers are the same function (`--share_towers`)."""
    return (
        model.query_tower.encoder is model.item_tower.encoder
        and model.query_tower.mlp is model.item_tower.mlp
    )
