"""Export: one SavedModel with the towers, the item table and a ScaNN (or brute-force) index.

Layout (TF Serving style, one numbered version per export):

  <export_dir>/<step>/            saved_model.pb, variables/, export_info.json
  <export_dir>/README.md          what is inside and how to query it

Completeness: the version is the directory name. A version is written into a hidden temporary
directory (`.tmp-<step>-<random>`), `export_info.json` last, and renamed to its number, so a
numbered directory without `export_info.json` is incomplete and readers skip it
(`ssl_retrieval.serving.api`). Pushing a version by hand follows the same protocol: copy it under a
temporary name inside the export dir, then rename it to the next number.

Signatures (explicit TensorSpecs):
  similar_items(item_id: string [B], k: int32 []) -> ids [B, k] string, scores [B, k] float32,
      found [B] bool. Neighbours of corpus items by their precomputed query-tower embedding; the
      item itself is excluded; unknown ids give found = false and empty rows.
      Lists follow the model's blend (blending.py, `blend` in export_info.json): the first
      round(prior_share * k) from the index (cos + beta * log(1 + count)), the next
      round(cold_share * k) from the cold ranking (cos + w_cold * tfidf over items without
      training pairs, exact), the rest from the similar ranking cos + w * tfidf - gamma *
      log(1 + count), each item once, with the score of the ranking that listed it. Without
      TF-IDF (w = 0) and with a ScaNN index the similar ranking is a search of the same index
      (queries end in -gamma instead of beta); with TF-IDF it is exact over the whole corpus
      (N x d flops and the TF-IDF matrix's non-zeros per query).
      `similar_ranking` in export_info.json says which.
  similar_items_by_features(<feature tensors>, k) -> ids, scores: the query tower on raw
      features, for items not in the corpus (cold start).
  item_embedding(<feature tensors>) -> embedding [B, d]: the item tower.
Feature tensors: one input per schema feature, named like it. Sparse features (id, categorical,
multi-hot) are string [B, max_values] padded with "" (an empty row = missing); dense features are
float32 [B] with NaN for missing. k is capped at the export's `--k`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import uuid

import numpy as np

from ssl_retrieval import atomic, blending, popularity, tfidf
from ssl_retrieval import data as data_lib
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.serving import index as index_lib
from ssl_retrieval.serving import item_catalog
from ssl_retrieval.serving.config import ExportConfig  # noqa: F401  (re-exported)

# Up to this many queries a call, TF-IDF cosines are summed from posting lists (ContentVectors):
# at 1M items 3.1x faster than the sparse product for 1 query, 1.5x for 2, 0.7x for 4
# (`bench/exact_ranking.py`, results/bench/exact_ranking.json).
POSTINGS_MAX_BATCH = 2
# Queries ranked exactly over the corpus at a time: bounds the [rows, N] products' memory, and at
# 1M items a batch of 100 is ranked 1.34x faster in chunks of 16 than at once (4: 0.64x).
EXACT_CHUNK = 16


def feature_signature(features: list[dict]) -> dict:
    specs = {}
    for f in features:
        if f["kind"] == schema_lib.DENSE:
            specs[f["name"]] = tf.TensorSpec([None], tf.float32, name=f["name"])
        else:
            specs[f["name"]] = tf.TensorSpec([None, None], tf.string, name=f["name"])
    return specs


def to_model_features(inputs: dict, features: list[dict]) -> dict:
    """Signature inputs -> what the towers take (ragged strings, float with NaN)."""
    out = {}
    for f in features:
        value = inputs[f["name"]]
        if f["kind"] == schema_lib.DENSE:
            out[f["name"]] = value
        else:
            out[f["name"]] = tf.RaggedTensor.from_tensor(value, padding="")
    return out


class ContentVectors(tf.Module):
    """The corpus TF-IDF matrix (tfidf.py) in the graph: rows of corpus items, the same vectors
    for items given by their feature values, and their cosines with every corpus item.

    The cosines come two ways, whichever is cheaper for the batch: up to
    `POSTINGS_MAX_BATCH` queries, the posting lists (the matrix by column) of each query's few
    tokens are gathered and summed, work in proportion to those lists; for larger batches, one
    sparse-dense product with the whole [N, V] matrix, whose cost grows slowly with the batch
    (`bench/exact_ranking.py` at 1M items: postings 3.1x faster for one query, 0.5x for 16).
    The matrix is held by row and by column, in variables, so that it is saved in the checkpoint
    files, not as constants in saved_model.pb (313 MB at 1M items, and one copy per signature
    while saving).
    """

    def __init__(self, content: tfidf.Tfidf):
        super().__init__()
        self.num_items, self.num_tokens = content.matrix.shape
        self.features = list(content.features)
        by_row = content.matrix.tocsr()
        by_row.sort_indices()
        coo = by_row.tocoo()  # row-major, as the sparse tensor needs

        def variable(array, dtype):
            return tf.Variable(np.asarray(array, dtype), trainable=False)

        self.indices = variable(np.stack([coo.row, coo.col], axis=1), np.int64)
        self.values = variable(coo.data, np.float32)
        self.row_splits = variable(by_row.indptr, np.int64)
        by_column = content.matrix.tocsc()
        by_column.sort_indices()
        self.posting_splits = variable(by_column.indptr, np.int64)
        self.posting_items = variable(by_column.indices, np.int64)
        self.posting_values = variable(by_column.data, np.float32)
        self.idf = variable(content.idf, np.float32)
        self.token_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([t.encode("utf-8") for t in content.tokens], tf.string),
                tf.range(self.num_tokens, dtype=tf.int64),
            ),
            default_value=-1,
        )

    def _dense(self, rows, columns, values, batch):
        """[B, V] from (row, column, value) triples; a repeated token counts once."""
        indices = tf.stack([rows, columns], axis=1)
        return tf.tensor_scatter_nd_max(
            tf.zeros([batch, self.num_tokens], tf.float32), indices, values
        )

    def of_rows(self, rows):
        """[B, V] TF-IDF vectors of corpus rows [B]."""
        positions = tf.ragged.range(
            tf.gather(self.row_splits, rows), tf.gather(self.row_splits, rows + 1)
        )
        flat = positions.flat_values
        columns = tf.gather(self.indices, flat)[:, 1]
        return self._dense(
            positions.value_rowids(), columns, tf.gather(self.values, flat), tf.shape(rows)[0]
        )

    def of_features(self, inputs):
        """[B, V] TF-IDF vectors of items given as signature inputs (string [B, max_values])."""
        batch = tf.shape(inputs[self.features[0]])[0] if self.features else 1
        rows, columns = [], []
        for name in self.features:
            values = inputs[name]
            tokens = tf.strings.join([tf.constant(name + "="), values])
            found = tf.not_equal(values, "")
            column = tf.where(found, self.token_table.lookup(tokens), -1)
            where = tf.where(column >= 0)
            rows.append(where[:, 0])
            columns.append(tf.gather_nd(column, where))
        if not rows:
            return tf.zeros([batch, self.num_tokens], tf.float32)
        rows, columns = tf.concat(rows, 0), tf.concat(columns, 0)
        dense = self._dense(rows, columns, tf.gather(self.idf, columns), batch)
        return tf.math.l2_normalize(dense, axis=1, epsilon=1e-24)

    def similarities(self, vectors):
        """[B, N] TF-IDF cosine of each of `vectors` [B, V] with every corpus item."""
        return tf.cond(
            tf.shape(vectors)[0] <= POSTINGS_MAX_BATCH,
            lambda: self._by_postings(vectors),
            lambda: self._by_product(vectors),
        )

    def _by_product(self, vectors):
        matrix = tf.sparse.SparseTensor(
            self.indices, self.values, [self.num_items, self.num_tokens]
        )
        return tf.transpose(tf.sparse.sparse_dense_matmul(matrix, vectors, adjoint_b=True))

    def posting_entries(self, vectors):
        """(query row, corpus item, weight) [M] of every posting of the tokens of `vectors` [B, V]:
        the terms whose sums per (row, item) are the cosines."""
        entries = tf.where(vectors > 0)  # [M, 2]: (batch row, token)
        tokens = entries[:, 1]
        found = tf.ragged.range(
            tf.gather(self.posting_splits, tokens), tf.gather(self.posting_splits, tokens + 1)
        )
        flat, entry = found.flat_values, found.value_rowids()
        weights = tf.gather(tf.gather_nd(vectors, entries), entry)
        return (
            tf.gather(entries[:, 0], entry),
            tf.gather(self.posting_items, flat),
            weights * tf.gather(self.posting_values, flat),
        )

    def _by_postings(self, vectors):
        rows, items, weights = self.posting_entries(vectors)
        # Summed into the flattened [B * N] scores: a segment sum over 1-D positions, 1.4 to 2x
        # faster at 1M items than scatter_nd at [M, 2] indices (bench/exact_ranking.py).
        batch = tf.shape(vectors)[0]
        scores = tf.math.unsorted_segment_sum(
            weights, rows * self.num_items + items, tf.cast(batch, tf.int64) * self.num_items
        )
        return tf.reshape(scores, [batch, self.num_items])


class SimilarItemsModule(tf.Module):
    """What the SavedModel holds; see the module docstring for the signatures."""

    def __init__(
        self,
        model,
        item_ids,
        query_embeddings,
        item_embeddings,
        index,
        max_k: int,
        features: list[dict],
        blend: blending.Blend | None = None,
        content: tfidf.Tfidf | None = None,
        log_counts: np.ndarray | None = None,
        similar_from_index: bool = False,
    ):
        super().__init__()
        blend = blend or blending.Blend()
        # The index holds [item, log(1 + count)] when a ranking adds a multiple of the
        # popularity (`shifted`), and queries then end in that multiple (popularity.py): beta for
        # the popular ranking, -gamma for the similar one. Without the similar ranking
        # (prior_share 1) the index is the whole answer. The similar ranking comes from the same
        # index when it has no TF-IDF term (`similar_from_index`), else it is exact.
        self.blend = blend
        self.similar_from_index = similar_from_index
        self.shifted = shifted_index(blend, similar_from_index)
        # The towers are called, not saved as Keras layers: Keras's own SavedModel serialisation
        # traces every layer and writes its config, vocabularies inlined (4 to 5 minutes of a
        # 1M-item export). Their variables and lookup tables are tracked here instead, which is
        # all the signatures capture.
        self._query_tower = model.query_tower.__call__
        self._item_tower = model.item_tower.__call__
        state = {
            id(t): t
            for tower in (model.query_tower, model.item_tower)
            for t in tf.train.TrackableView(tower).descendants()
            if isinstance(t, (tf.Variable, tf.saved_model.experimental.TrackableResource))
        }
        self.tower_state = list(state.values())
        self.index = index
        self.max_k = int(max_k)
        self.features = features
        # UTF-8, not numpy's bytes (ASCII only): ids and values of any catalogue.
        encoded_ids = tf.constant([str(i).encode("utf-8") for i in item_ids], tf.string)
        self.item_ids = tf.Variable(encoded_ids, trainable=False)
        self.query_embeddings = tf.Variable(query_embeddings.astype(np.float32), trainable=False)
        exact_similar = not blend.single_ranking and not similar_from_index
        if exact_similar or blend.cold_share:
            self.item_embeddings = tf.Variable(item_embeddings.astype(np.float32), trainable=False)
        self.content = ContentVectors(content) if blend.uses_content else None
        if blend.popularity_penalty and exact_similar:
            self.log_counts = tf.constant(np.asarray(log_counts, np.float32))
        if blend.cold_share:  # items with a training pair, which the cold ranking leaves out
            self.counted = tf.constant(np.asarray(log_counts)[np.newaxis, :] > 0)
        self.id_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                encoded_ids,
                tf.range(len(item_ids), dtype=tf.int64),
            ),
            default_value=-1,
        )
        spec = feature_signature(features)
        k_spec = tf.TensorSpec([], tf.int32, name="k")
        self.similar_items = tf.function(
            self._similar_items,
            input_signature=[tf.TensorSpec([None], tf.string, name="item_id"), k_spec],
        )
        self.similar_items_by_features = tf.function(
            self._similar_items_by_features, input_signature=[spec, k_spec]
        )
        self.item_embedding = tf.function(self._item_embedding, input_signature=[spec])

    def _popular(self, queries, exclude):
        """[B, max_k] corpus indices (-1 padding) and scores of the popular ranking (the index),
        dropping `exclude` [B] corpus indices (-1: none)."""
        return self._from_index(queries, self.blend.popularity_prior, exclude)

    def _from_index(self, queries, popularity_weight: float, exclude):
        """The index's top max_k for cos + popularity_weight * log(1 + count), without `exclude`."""
        if self.shifted:
            weight = tf.fill([tf.shape(queries)[0], 1], tf.constant(popularity_weight, tf.float32))
            queries = tf.concat([queries, weight], axis=1)
        scores, indices = self.index.search(queries, self.max_k + 1)
        # ScaNN's op has no static shape; the ragged mask below needs the rank.
        scores = tf.reshape(scores, [-1, self.max_k + 1])
        indices = tf.reshape(tf.cast(indices, tf.int64), [-1, self.max_k + 1])
        keep = tf.not_equal(indices, exclude[:, tf.newaxis])
        shape = [None, self.max_k + 1]
        indices = tf.ragged.boolean_mask(indices, keep).to_tensor(-1, shape=shape)
        scores = tf.ragged.boolean_mask(scores, keep).to_tensor(float("-inf"), shape=shape)
        return indices[:, : self.max_k], scores[:, : self.max_k]

    def _similar(self, queries, cosines, tfidf_scores, exclude):
        """[B, max_k] corpus indices and scores of the similar ranking: from the index, or exact
        over the corpus (`cosines`, `tfidf_scores` [B, N]) when it has a TF-IDF term."""
        if self.similar_from_index:
            return self._from_index(queries, -self.blend.popularity_penalty, exclude)
        scores = cosines
        if self.blend.content_weight:
            scores = scores + self.blend.content_weight * tfidf_scores
        if self.blend.popularity_penalty:
            scores -= self.blend.popularity_penalty * self.log_counts[tf.newaxis, :]
        return self._exact_top(scores, exclude)

    def _cold(self, cosines, tfidf_scores, exclude):
        """[B, max_k] corpus indices and scores of the cold ranking: cos + w_cold * tfidf over
        the items without training pairs (exact; -1 pads when there are fewer)."""
        scores = cosines
        if self.blend.cold_content_weight:
            scores = scores + self.blend.cold_content_weight * tfidf_scores
        return self._exact_top(tf.where(self.counted, float("-inf"), scores), exclude)

    def _exact_top(self, scores, exclude):
        """Top max_k of [B, N] `scores` without `exclude` [B] (-1: none)."""
        rows = tf.where(exclude >= 0)[:, 0]
        excluded = tf.stack([rows, tf.gather(exclude, rows)], axis=1)
        minus_inf = tf.fill(tf.shape(rows), float("-inf"))
        scores = tf.tensor_scatter_nd_update(scores, excluded, minus_inf)
        scores, indices = exact_top_k(scores, self.max_k)
        indices = tf.where(scores > float("-inf"), indices, -1)
        return indices, scores

    def _neighbours(self, queries, content_vectors, k, exclude):
        """ids and scores [B, k] under the blend (blending.merge, in the graph): the popular
        slots, the cold slots, the similar ranking, the rest of the popular ranking, each item
        once where it first comes."""
        k = tf.clip_by_value(k, 1, self.max_k)
        indices, scores = self._popular(queries, exclude)
        if not self.blend.single_ranking:
            inputs = [queries, exclude] + ([content_vectors] if self.content is not None else [])
            rankings = 2 if self.blend.cold_share else 1
            dtypes = [tf.int64, tf.float32] * rankings
            ranked = _in_chunks(self._exact_rankings, inputs, dtypes, EXACT_CHUNK)
            prior_slots = _slots(self.blend.prior_share, k)
            sources = [(indices[:, :prior_slots], scores[:, :prior_slots])]
            if self.blend.cold_share:
                cold_slots = tf.minimum(k - prior_slots, _slots(self.blend.cold_share, k))
                cold, cold_scores = ranked[0], ranked[1]
                sources.append((cold[:, :cold_slots], cold_scores[:, :cold_slots]))
            sources.append((ranked[-2], ranked[-1]))
            sources.append((indices[:, prior_slots:], scores[:, prior_slots:]))
            indices, scores = _first_occurrences(sources, self.max_k)
        indices, scores = indices[:, :k], scores[:, :k]
        ids = tf.where(indices >= 0, tf.gather(self.item_ids, tf.maximum(indices, 0)), b"")
        return ids, scores

    def _exact_rankings(self, queries, exclude, content_vectors=None):
        """[cold indices, cold scores,] similar indices, similar scores, each [B, max_k], of a
        few queries: the [B, N] products are made once for both rankings."""
        cosines = tfidf_scores = None
        if self.blend.cold_share or not self.similar_from_index:
            cosines = tf.matmul(queries, self.item_embeddings, transpose_b=True)
        if self.content is not None:
            tfidf_scores = self.content.similarities(content_vectors)
        ranked = []
        if self.blend.cold_share:
            ranked += self._cold(cosines, tfidf_scores, exclude)
        ranked += self._similar(queries, cosines, tfidf_scores, exclude)
        return ranked

    def _similar_items(self, item_id, k):
        rows = self.id_table.lookup(item_id)
        found = rows >= 0
        safe_rows = tf.maximum(rows, 0)
        queries = tf.gather(self.query_embeddings, safe_rows)
        content = self.content.of_rows(safe_rows) if self.content is not None else None
        ids, scores = self._neighbours(queries, content, k, rows)
        ids = tf.where(found[:, tf.newaxis], ids, b"")
        scores = tf.where(found[:, tf.newaxis], scores, float("-inf"))
        return {"ids": ids, "scores": scores, "found": found}

    def _similar_items_by_features(self, features, k):
        queries = self._query_tower(to_model_features(features, self.features))
        content = self.content.of_features(features) if self.content is not None else None
        none = -tf.ones(tf.shape(queries)[:1], tf.int64)
        ids, scores = self._neighbours(queries, content, k, none)
        return {"ids": ids, "scores": scores}

    def _item_embedding(self, features):
        return {"embedding": self._item_tower(to_model_features(features, self.features))}


def _in_chunks(fn, inputs, dtypes, chunk: int):
    """fn(*inputs) for inputs [B, ...] split into row chunks of `chunk`, one after the other, its
    outputs (of `dtypes`) concatenated: a batch of any size holds at most `chunk` rows of each
    [rows, N] product at a time."""
    batch = tf.shape(inputs[0])[0]
    count = (batch + chunk - 1) // chunk
    arrays = [tf.TensorArray(dtype, size=count, infer_shape=False) for dtype in dtypes]

    def body(i, arrays):
        outputs = fn(*[x[i * chunk : (i + 1) * chunk] for x in inputs])
        return i + 1, [a.write(i, o) for a, o in zip(arrays, outputs, strict=True)]

    _, arrays = tf.while_loop(
        lambda i, _: i < count, body, (tf.constant(0), arrays), parallel_iterations=1
    )
    return [a.concat() for a in arrays]


def _slots(share: float, k):
    """round(share * k) as blending.Blend's slots, for a k tensor."""
    return tf.cast(tf.floor(share * tf.cast(k, tf.float32) + 0.5), tf.int32)


def exact_top_k(scores, k: int, chunk: int = 1024):
    """tf.math.top_k(scores, k) of [B, N] scores, as (values, int64 indices), faster at N = 1M
    (`bench/exact_ranking.py`: 1.7x for one query, 2.4x for 16, 6.5x for 100; the machine was
    loaded by two training runs): the top k lie in the k chunks of `chunk` items with the largest
    maxima, so one reduce_max over the row and a top-k over k * chunk candidates replace the
    top-k over N. Ties keep the lower index first, as tf.math.top_k does (the chosen chunks are
    gathered in corpus order)."""
    batch, n = tf.shape(scores)[0], tf.shape(scores)[1]
    padded = tf.pad(scores, [[0, 0], [0, (-n) % chunk]], constant_values=float("-inf"))
    chunks = tf.reshape(padded, [batch, -1, chunk])
    picked = tf.minimum(k, tf.shape(chunks)[1])
    best = tf.sort(tf.math.top_k(tf.reduce_max(chunks, axis=2), picked).indices, axis=1)
    candidates = tf.reshape(tf.gather(chunks, best, batch_dims=1), [batch, -1])
    values, positions = tf.math.top_k(candidates, tf.minimum(k, n))
    indices = tf.gather(best, positions // chunk, batch_dims=1) * chunk + positions % chunk
    return values, tf.cast(indices, tf.int64)


def _first_occurrences(sources, width: int):
    """[B, width] indices and scores: the sources' lists concatenated in order, keeping each
    item where it first comes and skipping -1 padding (-1 and -inf pad the result)."""
    indices = tf.concat([i for i, _ in sources], axis=1)
    scores = tf.concat([s for _, s in sources], axis=1)
    same = tf.equal(indices[:, :, tf.newaxis], indices[:, tf.newaxis, :])
    position = tf.range(tf.shape(indices)[1])
    before = position[:, tf.newaxis] < position[tf.newaxis, :]  # [i, j]: i comes before j
    repeated = tf.reduce_any(tf.logical_and(same, before[tf.newaxis]), axis=1)
    keep = tf.logical_and(tf.logical_not(repeated), indices >= 0)
    shape = [None, width]
    indices = tf.ragged.boolean_mask(indices, keep).to_tensor(-1, shape=shape)
    scores = tf.ragged.boolean_mask(scores, keep).to_tensor(float("-inf"), shape=shape)
    return indices, scores


README = """# ssl_retrieval export

Each numbered directory is one export (TF Serving layout; the number is the training step). It is
a SavedModel with the towers, the item table and a {index} index. Load it in Python with

    import ssl_retrieval
    model = ssl_retrieval.load("{export_dir}")      # the newest version
    model.similar(["vim"], k=10)

or serve it over HTTP with `python -m ssl_retrieval.serve --export_dir={export_dir}`. Without
ssl_retrieval, `import scann` before `tf.saved_model.load(...)` (the index uses ScaNN ops).
Signatures: similar_items, similar_items_by_features, item_embedding (see export_info.json).
"""


def shifted_index(blend: blending.Blend, similar_from_index: bool) -> bool:
    """Whether the index holds [item, log(1 + count)]: a ranking it serves adds popularity."""
    return bool(blend.popularity_prior) or (similar_from_index and bool(blend.popularity_penalty))


def _progress(message: str, *args) -> None:
    """A progress line with the process's resident memory (Linux): the export of a large corpus
    holds several corpus-sized copies at once, and this says which step needed what."""
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3
        logging.info("export: " + message + " (RSS %.2f GB)", *args, rss)
    except OSError:
        logging.info("export: " + message, *args)


def build_index(config: ExportConfig, item_embeddings, sample_queries, max_k: int):
    """The index, its Recall@10 on `sample_queries` against brute force, and the tuning trail.

    Queries come from the query tower and items from the item tower, so a tree trained on the
    items can scatter a query's neighbours over more leaves than symmetric data would, and
    embeddings whose scores crowd together (on Debian, with logQ correction) need more exact
    re-scoring after the hashed scores. With `config.tune` (the default), a ScaNN index that
    misses `config.min_recall` is rebuilt searching twice the leaves and re-scoring twice the
    candidates, up to all of both; each attempt goes to export_info.json.
    """
    params = config.scann
    tuning = []
    n = len(item_embeddings)
    k = min(10, n)
    while True:
        index = index_lib.build(config.index, item_embeddings, max_k, params)
        _progress("index built in %.1f s", index.build_seconds)
        recall = index_lib.recall_against_brute_force(index, item_embeddings, sample_queries, k)
        _progress("index Recall@10 %.3f against brute force", recall)
        tuning.append({**index.params, "recall_at_10": recall})
        if not config.tune or config.index != "scann" or recall >= config.min_recall:
            return index, recall, tuning
        searched, leaves = index.params["num_leaves_to_search"], index.params["num_leaves"]
        reorder = index.params["reorder"]
        if searched >= leaves and reorder >= n:
            return index, recall, tuning
        more = (min(2 * searched, leaves), min(2 * reorder, n))
        logging.info(
            "export: index Recall@10 %.3f < --min_recall=%.3f searching %d leaves and "
            "re-scoring %d; rebuilding with %d and %d",
            recall,
            config.min_recall,
            searched,
            reorder,
            *more,
        )
        params = dataclasses.replace(params, num_leaves_to_search=more[0], reorder=more[1])


def build(config: ExportConfig) -> tuple[SimilarItemsModule, dict]:
    """The in-memory module and its export info (index built, recall measured)."""
    from ssl_retrieval import model as model_lib  # noqa: PLC0415

    if config.k < 1:
        raise ValueError(f"--k must be >= 1, got {config.k}")
    model = model_lib.load_from_model_dir(config.model_dir, config.data_dir)
    data_dir = DataDir.of(config.data_dir or model.config.data_dir)
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    step = int(latest.rsplit("-", 1)[1])
    version_dir = os.path.join(config.export_dir, str(step))
    if os.path.exists(version_dir) and not config.overwrite:
        raise ValueError(f"{version_dir} exists; pass --overwrite to replace this version")
    item_ids = data_lib.corpus_ids(data_dir)
    query_embeddings, item_embeddings = model_lib.embed_corpus(model, data_dir)
    _progress("embedded %d corpus items", len(item_ids))
    blend = blending.resolve(
        config.model_dir, **{name: getattr(config, name) for name in blending.NAMES}
    )
    log_counts = popularity.log_counts(data_dir, item_ids)
    # Without TF-IDF the similar ranking is a maximum inner product search too (its popularity
    # penalty is the index's last coordinate times -gamma), so ScaNN serves both rankings: at
    # 1M items an exact similar ranking costs ~90 ms a query, the index ~1 ms.
    similar_from_index = (
        config.index == "scann" and not blend.single_ranking and not blend.content_weight
    )
    index_queries, index_items = popularity.augment(
        query_embeddings, item_embeddings, log_counts, blend.popularity_prior
    )
    if not shifted_index(blend, similar_from_index):  # plain cosine: no extra dimension
        index_queries, index_items = query_embeddings, item_embeddings
    content = tfidf.build(data_dir) if blend.uses_content else None
    if content is not None:
        _progress("TF-IDF of the corpus: %d tokens", len(content.tokens))
    n = len(item_ids)
    max_k = min(config.k, n - 1)
    _progress("%d items, building the %s index", n, config.index)
    rng = np.random.default_rng(0)
    sample = rng.choice(n, size=min(config.recall_sample, n), replace=False)
    index, recall, tuning = build_index(config, index_items, index_queries[sample], max_k + 1)
    similar_recall = None
    if similar_from_index:
        similar_queries = index_queries[sample].copy()
        if shifted_index(blend, similar_from_index):
            similar_queries[:, -1] = -blend.popularity_penalty
        similar_recall = index_lib.recall_against_brute_force(
            index, index_items, similar_queries, min(10, n)
        )
    features = [{"name": f["name"], "kind": f["kind"]} for f in model.encoder.features]
    module = SimilarItemsModule(
        model,
        item_ids,
        query_embeddings,
        item_embeddings,
        index,
        max_k,
        features,
        blend,
        content,
        log_counts,
        similar_from_index,
    )
    _progress("module ready")
    info = {
        "version": step,
        "model_dir": os.path.abspath(config.model_dir),
        "data_dir": os.path.abspath(data_dir.path),
        "method": model.config.method,
        "num_items": n,
        "embedding_dim": int(item_embeddings.shape[1]),
        "popularity_prior": blend.popularity_prior,
        "blend": dataclasses.asdict(blend),
        "max_k": max_k,
        "index": config.index,
        "index_params": index.params,
        "index_build_seconds": round(index.build_seconds, 3),
        "recall_at_10_vs_brute_force": recall,
        # How the similar ranking is served: "index" (ScaNN, this recall on the same sample),
        # "exact" (over the whole corpus) or None (the blend has no similar ranking).
        "similar_ranking": None
        if blend.single_ranking
        else ("index" if similar_from_index else "exact"),
        "similar_recall_at_10_vs_brute_force": similar_recall,
        "recall_sample": int(len(sample)),
        "index_tuning": tuning,
        "features": features,
        "signatures": ["similar_items", "similar_items_by_features", "item_embedding"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return module, info


def write(module: SimilarItemsModule, info: dict, config: ExportConfig) -> str:
    """Saves the module as `<export_dir>/<version>/` (temporary dir, then rename)."""
    step = info["version"]
    version_dir = os.path.join(config.export_dir, str(step))
    recall = info["recall_at_10_vs_brute_force"]
    if os.path.exists(version_dir) and not config.overwrite:
        raise ValueError(f"{version_dir} exists; pass --overwrite to replace this version")
    os.makedirs(config.export_dir, exist_ok=True)
    tmp = os.path.join(config.export_dir, f".tmp-{step}-{uuid.uuid4().hex[:8]}")
    try:
        _progress("saving version %d", step)
        tf.saved_model.save(
            module,
            tmp,
            signatures={
                "similar_items": module.similar_items,
                "similar_items_by_features": module.similar_items_by_features,
                "item_embedding": module.item_embedding,
            },
            options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]),
        )
        _progress("saved the SavedModel")
        info["item_catalog"] = item_catalog.write(
            info["data_dir"], tmp
        )  # for ssl_retrieval.serving.page
        with open(os.path.join(tmp, "export_info.json"), "w") as f:
            json.dump(info, f, indent=2)
            # The completion marker, written last and on disk before the rename (module doc).
            f.flush()
            os.fsync(f.fileno())
        # --overwrite: the old version is moved aside, then deleted.
        old = os.path.join(config.export_dir, f".old-{step}-{uuid.uuid4().hex[:8]}")
        atomic.replace_dir(tmp, version_dir, old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with open(os.path.join(config.export_dir, "README.md"), "w") as f:
        f.write(README.format(index=config.index, export_dir=config.export_dir))
    if recall < config.min_recall:
        logging.warning(
            "WARNING: INDEX RECALL@10 %.3f IS BELOW --min_recall=%.3f; raise "
            "--num_leaves_to_search or --reorder, or export with --index=brute_force",
            recall,
            config.min_recall,
        )
    return version_dir


def run(config: ExportConfig) -> dict:
    """Exports the model of `config.model_dir`; returns the export info (also written)."""
    module, info = build(config)
    info["export_path"] = write(module, info, config)
    return info
