"""tf.data input over the preprocessed TFRecords.

Two streams feed training: the pairs (main loss) and, zipped with them, items drawn uniformly
from the corpus (SSL loss; paper 3.3: "heterogeneous sample distributions"). Both are batched
before parsing (`tf.io.parse_example` on a batch is much faster than per record) and prefetched.

Uniform order. The preprocessing job writes records in the order of a hash of their key, so any
stretch of a file is a random sample of it. Each epoch the training streams shuffle the file list,
read up to `MAX_INTERLEAVE` files round-robin, and shuffle records in a buffer of
min(records, `SHUFFLE_BUFFER`): when the split fits in the buffer every epoch is an exact uniform
permutation; when it does not, batches are still uniform samples because the files are in hashed
order. (A data dir written sorted by key, as older versions of the job did, would give batches
from a narrow band of the alphabet: near-duplicate in-batch negatives.)

Determinism and resuming: shuffles are seeded, so the sequence of batches is a function of the
seed; a resumed run rebuilds the same streams and skips the batches already consumed
(`skip_batches`). Skipping reads but does not parse those records.
"""

from __future__ import annotations

import numpy as np

from ssl_retrieval import data_dir as data_dir_lib
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.data_dir import DataDir

# Records held by a shuffle buffer: 262,144 Debian pair records take about 0.5 GB.
SHUFFLE_BUFFER = 262_144
MAX_INTERLEAVE = 16


def parse_spec(schema: schema_lib.Schema, prefix: str = "") -> dict:
    """The `tf.io.parse_example` spec of the item features (keys `prefix + name`)."""
    spec = {}
    for f in schema.features:
        if f.kind == schema_lib.DENSE:
            spec[prefix + f.name] = tf.io.FixedLenFeature(
                [], tf.float32, default_value=float("nan")
            )
        else:
            spec[prefix + f.name] = tf.io.RaggedFeature(tf.string)
    return spec


def files(data_dir, schema: schema_lib.Schema | None, split: str) -> list[str]:
    """Sorted files of `split` ("train", "eval" or "items"); ValueError if there are none."""
    return data_dir_lib.find_files(data_dir, schema or DataDir.of(data_dir).schema, split)


def _parse_pairs(schema: schema_lib.Schema):
    spec = {
        **parse_spec(schema, schema_lib.QUERY_PREFIX),
        **parse_spec(schema, schema_lib.CANDIDATE_PREFIX),
    }
    spec[schema_lib.WEIGHT_KEY] = tf.io.FixedLenFeature([], tf.float32, default_value=1.0)
    names = schema.names

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        return {
            "query": {n: parsed[schema_lib.QUERY_PREFIX + n] for n in names},
            "candidate": {n: parsed[schema_lib.CANDIDATE_PREFIX + n] for n in names},
            "weight": parsed[schema_lib.WEIGHT_KEY],
        }

    return parse


def items_dataset(data_dir, batch_size: int, schema: schema_lib.Schema | None = None):
    """The whole corpus once, in file order: batches of {name: ragged strings | float [B]}.

    `data_dir`: a path or a `DataDir`; `schema` defaults to the data dir's."""
    data_dir = DataDir.of(data_dir)
    schema = schema or data_dir.schema
    spec = parse_spec(schema)
    return (
        tf.data.TFRecordDataset(files(data_dir, schema, "items"))
        .batch(batch_size)
        .map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def pairs_dataset(data_dir: str, split: str, batch_size: int, schema=None):
    """One pass over a pair split in file order (evaluation, tests)."""
    data_dir = DataDir.of(data_dir)
    schema = schema or data_dir.schema
    return (
        tf.data.TFRecordDataset(files(data_dir, schema, split))
        .batch(batch_size)
        .map(_parse_pairs(schema), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def corpus_ids(data_dir, schema: schema_lib.Schema | None = None) -> list[str]:
    """The corpus ids in items-* file order (the corpus index)."""
    data_dir = DataDir.of(data_dir)
    id_name = (schema or data_dir.schema).id_feature.name
    ids = []
    spec = {id_name: tf.io.FixedLenFeature([], tf.string)}
    dataset = (
        tf.data.TFRecordDataset(data_dir.files("items"))
        .batch(8192)
        .map(lambda x: tf.io.parse_example(x, spec))
    )
    for batch in dataset:
        # Ids are UTF-8 (numpy's astype(str) would decode them as ASCII: 'café-1' failed).
        ids += [item_id.decode("utf-8") for item_id in batch[id_name].numpy()]
    return ids


def pair_indices(data_dir, split: str, item_ids) -> tuple[np.ndarray, np.ndarray]:
    """(query, candidate) [P] int64 positions in `item_ids` (the corpus order, `corpus_ids`) of
    the pairs of `split`.

    Looked up in TensorFlow, batch by batch: at 10M pairs, a Python list of indices per pair
    took minutes and a GB.

    Raises:
      KeyError: a pair names an id that is not in `item_ids`.
    """
    data_dir = DataDir.of(data_dir)
    id_name = data_dir.schema.id_feature.name
    query_key = schema_lib.QUERY_PREFIX + id_name
    candidate_key = schema_lib.CANDIDATE_PREFIX + id_name
    spec = {
        query_key: tf.io.FixedLenFeature([], tf.string),
        candidate_key: tf.io.FixedLenFeature([], tf.string),
    }
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(item_ids), tf.string), tf.range(len(item_ids), dtype=tf.int64)
        ),
        default_value=-1,
    )

    def indices(records):
        parsed = tf.io.parse_example(records, spec)
        return table.lookup(parsed[query_key]), table.lookup(parsed[candidate_key])

    queries, candidates = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for q, c in tf.data.TFRecordDataset(data_dir.files(split)).batch(8192).map(indices):
        queries.append(q.numpy())
        candidates.append(c.numpy())
    queries, candidates = np.concatenate(queries), np.concatenate(candidates)
    if (queries < 0).any() or (candidates < 0).any():
        raise KeyError(f"{data_dir.path}: a {split} pair names an id that is not in the corpus")
    return queries, candidates


def train_item_counts(data_dir, schema: schema_lib.Schema | None = None) -> dict[str, int]:
    """How many training pairs each item is in, as query or candidate."""
    schema = schema or DataDir.of(data_dir).schema
    id_name = schema.id_feature.name
    spec = {
        schema_lib.QUERY_PREFIX + id_name: tf.io.FixedLenFeature([], tf.string),
        schema_lib.CANDIDATE_PREFIX + id_name: tf.io.FixedLenFeature([], tf.string),
    }
    dataset = (
        tf.data.TFRecordDataset(files(data_dir, schema, "train"))
        .batch(8192)
        .map(lambda x: tf.io.parse_example(x, spec))
    )
    # Counted by TF, not a Python loop over every id (17M ids at 1M items x 10M pairs: 46 s).
    ids = [batch[key] for batch in dataset for key in spec]
    if not ids:
        return {}
    unique, _, counts = tf.unique_with_counts(tf.concat(ids, axis=0))
    names = [item_id.decode("utf-8") for item_id in unique.numpy()]
    return dict(zip(names, counts.numpy().tolist(), strict=True))


def _shuffled_records(paths, input_context, seed: int, num_records: int):
    """One epoch of records: files in a fresh order, read round-robin, then a shuffle buffer.

    Repeating the returned dataset reshuffles both the files and the records every epoch.
    """
    ds = tf.data.Dataset.from_tensor_slices(paths)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    shard_records = pipelines > 1 and len(paths) < pipelines
    if pipelines > 1 and not shard_records:
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    records = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(len(paths), MAX_INTERLEAVE)),
        block_length=1,
    )
    if shard_records:
        records = records.shard(pipelines, input_context.input_pipeline_id)
        num_records = -(-num_records // pipelines)
    buffer = max(1, min(int(num_records) or SHUFFLE_BUFFER, SHUFFLE_BUFFER))
    return records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)


def training_dataset(
    data_dir: str,
    schema: schema_lib.Schema,
    batch_size: int,
    ssl_batch_size: int,
    seed: int,
    skip_batches: int = 0,
    input_context: tf.distribute.InputContext | None = None,
):
    """Endless (pairs batch, uniform items batch) for training.

    Args:
      batch_size, ssl_batch_size: global batch sizes; divided per replica via input_context.
      seed: shuffle seed (pairs: seed, items: seed + 1).
      skip_batches: batches to skip (the steps a resumed run already trained on).
    """
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        ssl_batch_size = input_context.get_per_replica_batch_size(ssl_batch_size)
    pairs = (
        _shuffled_records(
            files(data_dir, schema, "train"),
            input_context,
            seed,
            schema.counts.get("train_pairs", 0),
        )
        .repeat()
        .batch(batch_size, drop_remainder=True)
    )
    items = (
        _shuffled_records(
            files(data_dir, schema, "items"), input_context, seed + 1, schema.counts.get("items", 0)
        )
        .repeat()
        .batch(ssl_batch_size, drop_remainder=True)
    )
    item_spec = parse_spec(schema)
    parse_pairs = _parse_pairs(schema)
    ds = tf.data.Dataset.zip((pairs, items)).skip(skip_batches)
    ds = ds.map(
        lambda p, i: (parse_pairs(p), tf.io.parse_example(i, item_spec)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE)
