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
    n = len(token_sets)
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, max(len(column), 1)))
    df = np.asarray((x > 0).sum(axis=0)).ravel()
    idf = (np.log(n / np.maximum(df, 1)) + 1.0).astype(np.float32)
    tokens = sorted(column, key=column.get) or [""]
    return Tfidf(features, tokens, idf, normalize_rows(x @ sp.diags(idf)))


def build(data_dir, schema: schema_lib.Schema | None = None) -> Tfidf:
    """The TF-IDF of the preprocessed corpus (`items-*.tfrecord`), in corpus order.

    `data_dir`: a path or a `DataDir`."""
    from ssl_retrieval import data as data_lib  # noqa: PLC0415  (imports TensorFlow)

    data_dir = DataDir.of(data_dir)
    schema = schema or data_dir.schema
    names = feature_names(schema)
    token_sets: list[set[str]] = []
    for batch in data_lib.items_dataset(data_dir, 4096, schema=schema):
        size = int(batch[schema.id_feature.name].nrows())
        lists = {n: batch[n].to_list() for n in names}
        for i in range(size):
            token_sets.append({token(n, v.decode()) for n in names for v in lists[n][i]})
    return from_token_sets(names, token_sets)
