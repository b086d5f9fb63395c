"""TF-IDF vectors of items over their categorical and multi-hot values (the id excluded).

A token is `feature=value`; an item's vector is binary term frequency times
idf = log(N / df) + 1 over the corpus, L2-normalised, so the inner product of two rows is the
cosine the feature kNN reference ranks by. The same vectors are the content half of a blend
(`blend.py`): exact matches on rare values (the `source` package, a maintainer) are what a
TF-IDF kNN is good at and what a dense projection of it loses (a 64-d truncated SVD of the
Debian matrix keeps a fifth of its cold Recall@50).

Used by evaluation (the reference recommender, the blend) and by export: `ContentVectors` holds
the matrix, the tokens and their idf in the SavedModel's graph, so items given by features get
the same vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from ssl_retrieval import data as data_lib
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.data_dir import DataDir

# Up to this many queries a call, TF-IDF cosines in the graph are summed from posting lists
# (`ContentVectors`): at 1M items 3.1x faster than the sparse product for 1 query, 1.5x for 2,
# 0.7x for 4 (`bench/exact_ranking.py`, results/bench/exact_ranking.json).
POSTINGS_MAX_BATCH = 2


def token(feature: str, value: str) -> str:
    return f"{feature}={value}"


def feature_names(schema: schema_lib.Schema) -> list[str]:
    """The features whose values are tokens: categorical and multi-hot (not the id, not dense)."""
    kinds = (schema_lib.CATEGORICAL, schema_lib.MULTI_HOT)
    return [f.name for f in schema.features if f.kind in kinds]


@dataclasses.dataclass
class Tfidf:
    features: list[str]
    tokens: list[str]  # column j's token
    idf: np.ndarray  # [V] float32
    matrix: sp.csr_matrix  # [N, V] L2-normalised rows, in corpus order

    def vectors(self, items: list[dict[str, list[str]]]) -> sp.csr_matrix:
        """[B, V] rows for items given by their values; tokens not in the corpus count nothing."""
        column = {t: j for j, t in enumerate(self.tokens)}
        rows, cols = [], []
        for i, item in enumerate(items):
            found = {column.get(token(n, v)) for n in self.features for v in item.get(n, [])}
            found.discard(None)
            rows.extend([i] * len(found))
            cols.extend(sorted(found))
        x = sp.csr_matrix(
            (self.idf[cols], (rows, cols)), shape=(len(items), len(self.tokens)), dtype=np.float32
        )
        return normalize_rows(x)


def normalize_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x).tocsr().astype(np.float32)


def from_token_sets(features: list[str], token_sets: list[set[str]]) -> Tfidf:
    """The corpus TF-IDF of items given as sets of tokens, in corpus order."""
    column: dict[str, int] = {}
    rows, cols = [], []
    for i, tokens in enumerate(token_sets):
        for t in sorted(tokens):
            rows.append(i)
            cols.append(column.setdefault(t, len(column)))
    tokens = sorted(column, key=column.get)
    return _from_columns(
        features, tokens, np.array(rows, np.int64), np.array(cols, np.int64), len(token_sets)
    )


def _from_columns(features, tokens, rows, cols, n) -> Tfidf:
    """The TF-IDF of n items whose token `cols[i]` (a column of `tokens`) is in item `rows[i]`."""
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, max(len(tokens), 1)))
    df = np.asarray((x > 0).sum(axis=0)).ravel()
    idf = (np.log(n / np.maximum(df, 1)) + 1.0).astype(np.float32)
    return Tfidf(features, list(tokens) or [""], idf, normalize_rows(x @ sp.diags(idf)))


def build(data_dir, schema: schema_lib.Schema | None = None) -> Tfidf:
    """The TF-IDF of the preprocessed corpus (`items-*.tfrecord`), in corpus order.

    `data_dir`: a path or a `DataDir`. The same matrix and tokens as `from_token_sets` of each
    item's token set (columns in the order tokens are first met, an item's tokens sorted), built
    from arrays of (item, token) numbers: at 1M items, a Python set of strings per item took
    about 2 GB and most of the time."""
    data_dir = DataDir.of(data_dir)
    schema = schema or data_dir.schema
    names = feature_names(schema)
    number: dict[str, int] = {}  # token -> its number, in the order first read
    by_value: dict[str, dict[bytes, int]] = {name: {} for name in names}
    items, numbers = [], []
    n = 0
    for batch in data_lib.items_dataset(data_dir, 4096, schema=schema):
        size = int(batch[schema.id_feature.name].nrows())
        for name in names:
            values = batch[name].flat_values.numpy().tolist()
            lengths = batch[name].row_lengths().numpy()
            known = by_value[name]
            for v in set(values).difference(known):
                known[v] = number.setdefault(token(name, v.decode()), len(number))
            numbers.append(np.fromiter((known[v] for v in values), np.int64, len(values)))
            items.append(np.repeat(np.arange(n, n + size, dtype=np.int64), lengths))
        n += size
    vocabulary = sorted(number, key=number.get)
    order = sorted(range(len(vocabulary)), key=vocabulary.__getitem__)
    rank = np.empty(len(order), np.int64)  # a token's place in sorted order
    rank[order] = np.arange(len(order))
    width = max(len(order), 1)
    # Each item's distinct tokens in sorted order, items in corpus order.
    keys = np.unique(
        np.concatenate(items + [np.zeros(0, np.int64)]) * width
        + rank[np.concatenate(numbers + [np.zeros(0, np.int64)])]
    )
    rows, ranks = keys // width, keys % width
    # Columns in the order tokens first come in that sequence (what from_token_sets numbers).
    seen, first = np.unique(ranks, return_index=True)
    by_first = seen[np.argsort(first)]
    column = np.empty(width, np.int64)
    column[by_first] = np.arange(len(by_first))
    tokens = [vocabulary[order[r]] for r in by_first]
    return _from_columns(names, tokens, rows, column[ranks], n)


def product(matrix: sp.spmatrix) -> Callable[[np.ndarray, int, int], np.ndarray]:
    """(query corpus indices, start, stop) -> their TF-IDF cosines with corpus items
    start..stop-1 (`matrix` [N, V]), as a dense float32 array. The last one is kept, so that
    the scorers of one pass over the corpus (a blend's rankings, the feature kNN) share it."""
    by_row = matrix.tocsr()
    columns = by_row.T.tocsc()
    last: list = [None, None]

    def cosines(rows, start, stop):
        key = last[0]
        if key is not None and key[0] is rows and key[1:] == (start, stop):
            return last[1]
        last[0], last[1] = None, None  # the previous chunk's array freed before the next
        out = (by_row[rows] @ columns[:, start:stop]).toarray().astype(np.float32)
        last[0], last[1] = (rows, start, stop), out
        return out

    return cosines


class ContentVectors(tf.Module):
    """The corpus TF-IDF matrix in the graph: rows of corpus items, the same vectors
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

    def __init__(self, content: Tfidf):
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
