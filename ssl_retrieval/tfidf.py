"""TF-IDF vectors of items over their categorical and multi-hot values (the id excluded).

A token is `feature=value`; an item's vector is binary term frequency times
idf = log(N / df) + 1 over the corpus, L2-normalised, so the inner product of two rows is the
cosine the feature kNN reference ranks by. The same vectors are the content half of a blend
(`blending.py`): exact matches on rare values (the `source` package, a maintainer) are what a
TF-IDF kNN is good at and what a dense projection of it loses (a 64-d truncated SVD of the
Debian matrix keeps a fifth of its cold Recall@50).

Used by evaluation (the reference recommender, the blend) and by export (the SavedModel holds
the matrix, the tokens and their idf, so items given by features get the same vectors).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from ssl_retrieval import schema as schema_lib
from ssl_retrieval.data_dir import DataDir


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
    from ssl_retrieval import data as data_lib  # noqa: PLC0415  (imports TensorFlow)

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
