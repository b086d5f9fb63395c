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
      sources [B, k] string, found [B] bool. Neighbours of corpus items by their precomputed
      query-tower embedding; the item itself is excluded; unknown ids give found = false and
      empty rows. A list of k follows the model's blend for that list size (ranking/blend.py,
      `blends` in export_info.json): its linked, popular and cold slots, then the similar
      ranking, each item once (`ranking.merge`, the same code evaluation runs), with the score
      of the ranking that listed it and that ranking's name in `sources` ("linked", "popular"
      or "fused" in its slots, "cold", "similar"). The popular ranking comes from the index (cos + beta * log(1 +
      count)); without TF-IDF (w = 0) and with a ScaNN index the similar ranking is a search of
      the same index too (queries end in -gamma instead of beta); the others are exact over the
      whole corpus (N x d flops, the TF-IDF matrix's non-zeros and the query's links per query).
      `similar_ranking` in export_info.json says how the largest list size's is served.
  similar_items_by_features(<feature tensors>, k) -> ids, scores, sources: the query tower on
      raw features, for items not in the corpus (cold start; no known links).
  item_embedding(<feature tensors>) -> embedding [B, d]: the item tower.
Feature tensors: one input per schema feature, named like it. Sparse features (id, categorical,
multi-hot) are string [B, max_values] padded with "" (an empty row = missing); dense features are
float32 [B] with NaN for missing. k is capped at the export's `--k`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import time
import uuid

import numpy as np

from ssl_retrieval import atomic, progress_bar
from ssl_retrieval import data as data_lib
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking import factors, merge, popularity, tfidf, topk
from ssl_retrieval.ranking import links as links_lib
from ssl_retrieval.ranking import scores as scores_lib
from ssl_retrieval.serving import index as index_lib
from ssl_retrieval.serving import item_catalog
from ssl_retrieval.serving.config import ExportConfig  # noqa: F401  (re-exported)

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


class SimilarItemsModule(tf.Module):
    """What the SavedModel holds; see the module docstring for the signatures.

    Args:
      blends: the blend of each list size (`ranking/blend.py`).
      content: the corpus TF-IDF (when a blend has a TF-IDF term).
      log_counts: [N] log(1 + training count) of each corpus item.
      links: [N, N] training link counts (when a blend has linked slots).
      als: the links' factors (`factors.Factors`, when a fused ranking weighs them).
      similar_from_index: the index serves the similar rankings without a TF-IDF term too
        (`from_index`); the other rankings are exact over the corpus.
    """

    def __init__(
        self,
        model,
        item_ids,
        query_embeddings,
        item_embeddings,
        index,
        max_k: int,
        features: list[dict],
        blends: blend_lib.Blends | None = None,
        content: tfidf.Tfidf | None = None,
        log_counts: np.ndarray | None = None,
        links=None,
        similar_from_index: bool = False,
        als: factors.Factors | None = None,
    ):
        super().__init__()
        self.blends = blends or blend_lib.Blends.single(blend_lib.Blend())
        # The index holds [item, log(1 + count)] when a ranking it serves adds a multiple of the
        # popularity (`shifted`), and queries then end in that multiple (popularity.py): beta for
        # the popular ranking, -gamma for the similar one.
        self.similar_from_index = similar_from_index
        self.shifted = shifted_index(self.blends, similar_from_index)
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
        exact = {r for _, b in self.blends for r in self._exact_rankings_of(b).values()}
        if exact:
            self.item_embeddings = tf.Variable(item_embeddings.astype(np.float32), trainable=False)
        self.content = None
        if any(r.needs_content for r in exact):
            self.content = tfidf.ContentVectors(content)
        if any(r.needs_counts for r in exact):
            self.log_counts = tf.constant(np.asarray(log_counts, np.float32))
        self.links = None
        if any(r.needs_links for r in exact):
            # The item-kNN similarity is computed from the links here, as evaluation does.
            needs_knn = any(r.needs_knn for r in exact)
            similarity = links_lib.knn_similarity(links) if needs_knn else None
            self.links = links_lib.LinkRows(links, similarity)
        if any(r.needs_als for r in exact):
            # A query by id scores U[q] . V (a query by features has no U row: the term is 0).
            self.als_users = tf.Variable(als.users, trainable=False)
            self.als_items = tf.Variable(als.items, trainable=False)
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

    def _from_index_names(self, blend: blend_lib.Blend) -> list[str]:
        return from_index(blend, self.similar_from_index)

    def _exact_rankings_of(self, blend: blend_lib.Blend) -> dict:
        indexed = self._from_index_names(blend)
        return {n: r for n, r in blend.rankings().items() if n not in indexed}

    def _from_index(self, queries, ranking, exclude):
        """The index's top max_k for cos + popularity_weight * log(1 + count), without `exclude`
        [B] corpus indices (-1: none): [B, max_k] corpus indices (-1 padding) and scores."""
        if self.shifted:
            weight = tf.fill(
                [tf.shape(queries)[0], 1], tf.constant(ranking.popularity_weight, tf.float32)
            )
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

    def _exact(self, rankings: dict, queries, exclude, content_vectors=None):
        """[indices, scores] [B, max_k] of each of `rankings` (in order) for a few queries,
        exact over the corpus (`scores.score`): the [B, N] products are made once for all."""
        cosines = tf.matmul(queries, self.item_embeddings, transpose_b=True)
        rows = tf.where(exclude >= 0)[:, 0]
        excluded = tf.stack([rows, tf.gather(exclude, rows)], axis=1)
        cosines = tf.tensor_scatter_nd_update(
            cosines, excluded, tf.fill(tf.shape(rows), float("-inf"))
        )
        terms = {}
        if any(r.needs_content for r in rankings.values()):
            terms["tfidf"] = self.content.similarities(content_vectors)
        if any(r.needs_counts for r in rankings.values()):
            terms["log_counts"] = self.log_counts
        if any(r.needs_links for r in rankings.values()):
            terms["log_links"] = self.links.log_links(exclude)
        if any(r.needs_paths for r in rankings.values()):
            terms["log_paths"] = self.links.log_paths(exclude)
        if any(r.needs_knn for r in rankings.values()):
            terms["log_knn"] = self.links.log_knn(exclude)
        if any(r.needs_degree for r in rankings.values()):
            terms["log_degree"] = self.links.log_degree(exclude)
        if any(r.needs_als for r in rankings.values()):
            users = tf.gather(self.als_users, tf.maximum(exclude, 0))
            users *= tf.cast(exclude >= 0, tf.float32)[:, tf.newaxis]
            terms["als"] = tf.matmul(users, self.als_items, transpose_b=True)
        out = []
        for ranking in rankings.values():
            values, indices = topk.exact_top_k(
                scores_lib.score(ranking, cosines, **terms), self.max_k
            )
            out += [tf.where(values > float("-inf"), indices, -1), values]
        return out

    def _blend_list(self, blend, queries, content_vectors, k, exclude):
        """[B, max_k] corpus indices, scores and ranking names of `blend`'s list of k (the rest
        of the width continues the list)."""
        rankings = blend.rankings()
        indices, scores = {}, {}
        for name in self._from_index_names(blend):
            indices[name], scores[name] = self._from_index(queries, rankings[name], exclude)
        exact = self._exact_rankings_of(blend)
        if exact:
            inputs = [queries, exclude] + ([content_vectors] if self.content is not None else [])
            ranked = _in_chunks(
                lambda *x: self._exact(exact, *x), inputs, [tf.int64, tf.float32] * len(exact)
            )
            for i, name in enumerate(exact):
                indices[name], scores[name] = ranked[2 * i], ranked[2 * i + 1]
        merged = merge.Lists(indices, scores).merge(blend.segments(k), self.max_k)
        names = tf.constant([n.encode() for n in merged.names] + [b""])
        return merged.indices, merged.scores, tf.gather(names, merged.sources)

    def _neighbours(self, queries, content_vectors, k, exclude):
        """ids, scores and the ranking each came from, [B, k], under the blend of list size k."""
        k = tf.clip_by_value(k, 1, self.max_k)
        branches = [
            functools.partial(self._blend_list, blend, queries, content_vectors, k, exclude)
            for _, blend in self.blends
        ]
        if len(branches) == 1:
            indices, scores, sources = branches[0]()
        else:
            sizes = tf.constant(self.blends.ks[:-1], tf.int32)
            which = tf.reduce_sum(tf.cast(sizes < k, tf.int32))  # the smallest K >= k
            indices, scores, sources = tf.switch_case(which, branches)
        indices, scores, sources = indices[:, :k], scores[:, :k], sources[:, :k]
        ids = tf.where(indices >= 0, tf.gather(self.item_ids, tf.maximum(indices, 0)), b"")
        return ids, scores, sources

    def _similar_items(self, item_id, k):
        rows = self.id_table.lookup(item_id)
        found = rows >= 0
        safe_rows = tf.maximum(rows, 0)
        queries = tf.gather(self.query_embeddings, safe_rows)
        content = self.content.of_rows(safe_rows) if self.content is not None else None
        ids, scores, sources = self._neighbours(queries, content, k, rows)
        ids = tf.where(found[:, tf.newaxis], ids, b"")
        scores = tf.where(found[:, tf.newaxis], scores, float("-inf"))
        sources = tf.where(found[:, tf.newaxis], sources, b"")
        return {"ids": ids, "scores": scores, "found": found, "sources": sources}

    def _similar_items_by_features(self, features, k):
        queries = self._query_tower(to_model_features(features, self.features))
        content = self.content.of_features(features) if self.content is not None else None
        none = -tf.ones(tf.shape(queries)[:1], tf.int64)
        ids, scores, sources = self._neighbours(queries, content, k, none)
        return {"ids": ids, "scores": scores, "sources": sources}

    def _item_embedding(self, features):
        return {"embedding": self._item_tower(to_model_features(features, self.features))}


def _in_chunks(fn, inputs, dtypes, chunk: int = None):
    """fn(*inputs) for inputs [B, ...] split into row chunks of `chunk` (EXACT_CHUNK), one after
    the other, its outputs (of `dtypes`) concatenated: a batch of any size holds at most `chunk`
    rows of each [rows, N] product at a time."""
    chunk = chunk or EXACT_CHUNK
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


def from_index(blend: blend_lib.Blend, similar_from_index: bool) -> list[str]:
    """The rankings of `blend` the index serves: the popular one (unless fused), and with `similar_from_index`
    (a ScaNN index) the similar one when it has no TF-IDF term: its popularity penalty is the
    index's last coordinate times -gamma, so at 1M items it costs ~1 ms a query, not ~90 ms."""
    names = [] if blend.fusion else ["popular"]  # a fused ranking is exact
    if similar_from_index and blend.has_similar and not blend.content_weight:
        names.append("similar")
    return names


def shifted_index(blends: blend_lib.Blends, similar_from_index: bool) -> bool:
    """Whether the index holds [item, log(1 + count)]: a ranking it serves adds popularity."""
    return any(
        r.popularity_weight
        for _, b in blends
        for name, r in b.rankings().items()
        if name in from_index(b, similar_from_index)
    )


# The export's stages: the steps of its progress bar (`Stages`).
STAGES = ("embedding", "tf-idf", "links", "index", "module", "saving")


class Stages:
    """The export's progress: a bar over `STAGES` (`progress_bar.Bar`: a bar on a terminal, a
    line a minute in a file) whose status says what is under way or was done last, with the
    process's resident memory (Linux): the export of a large corpus holds several corpus-sized
    copies at once, and this says which stage needed what. Each status is a DEBUG line too
    (`-v 1`). Without a bar (`build` called by a test), the DEBUG lines alone."""

    def __init__(self, bar: progress_bar.Bar | None = None):
        self.bar = bar

    def note(self, message: str | None, *args, done: bool = False) -> None:
        """Says `message % args` (None: nothing); `done`: a stage is over."""
        text = None
        if message is not None:
            text = message % args + _resident_memory()
            logging.debug("export: %s", text)
        if self.bar is not None:
            self.bar.update(1 if done else 0, status=text)


def _resident_memory() -> str:
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3
        return f" (RSS {rss:.2f} GB)"
    except OSError:
        return ""


def build_index(
    config: ExportConfig, item_embeddings, sample_queries, max_k: int, stages: Stages | None = None
):
    """The index, its Recall@10 on `sample_queries` against brute force, and the tuning trail.

    Queries come from the query tower and items from the item tower, so a tree trained on the
    items can scatter a query's neighbours over more leaves than symmetric data would, and
    embeddings whose scores crowd together (on Debian, with logQ correction) need more exact
    re-scoring after the hashed scores. With `config.tune` (the default), a ScaNN index that
    misses `config.min_recall` is rebuilt searching twice the leaves and re-scoring twice the
    candidates, up to all of both; each attempt goes to export_info.json.
    """
    stages = stages or Stages()
    params = config.scann
    tuning = []
    n = len(item_embeddings)
    k = min(10, n)
    while True:
        stages.note("building the %s index over %d items", config.index, n)
        index = index_lib.build(config.index, item_embeddings, max_k, params)
        stages.note("index built in %.1f s; measuring its recall", index.build_seconds)
        recall = index_lib.recall_against_brute_force(index, item_embeddings, sample_queries, k)
        stages.note("index Recall@10 %.3f against brute force", recall)
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


def build(config: ExportConfig, stages: Stages | None = None) -> tuple[SimilarItemsModule, dict]:
    """The in-memory module and its export info (index built, recall measured); its progress
    into `stages` (optional)."""
    from ssl_retrieval.model import two_tower as model_lib  # noqa: PLC0415

    stages = stages or Stages()
    if config.k < 1:
        raise ValueError(f"--k must be >= 1, got {config.k}")
    stages.note("loading the model and embedding its corpus")
    model = model_lib.load_from_model_dir(config.model_dir, config.data_dir)
    data_dir = DataDir.of(config.data_dir or model.config.data_dir)
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    step = int(latest.rsplit("-", 1)[1])
    version_dir = os.path.join(config.export_dir, str(step))
    if os.path.exists(version_dir) and not config.overwrite:
        raise ValueError(f"{version_dir} exists; pass --overwrite to replace this version")
    item_ids = data_lib.corpus_ids(data_dir)
    query_embeddings, item_embeddings = model_lib.embed_corpus(model, data_dir)
    stages.note("embedded %d corpus items", len(item_ids), done=True)
    blends = blend_lib.resolve(config.model_dir, **config.blend.given())
    log_counts = popularity.log_counts(data_dir, item_ids)
    similar_from_index = config.index == "scann"
    content = tfidf.build(data_dir) if blends.uses_content else None
    if content is not None:
        stages.note("TF-IDF of the corpus: %d tokens", len(content.tokens))
    stages.note(None, done=True)
    links = None
    if blends.uses_links:
        links = links_lib.matrix(*data_lib.pair_indices(data_dir, "train", item_ids), len(item_ids))
        stages.note("training links: %d", links.nnz // 2)
    als = factors.load(config.model_dir) if blends.uses_als else None
    stages.note(None, done=True)
    n = len(item_ids)
    max_k = min(config.k, n - 1)
    index, recalls = _index(
        config, blends, query_embeddings, item_embeddings, log_counts, max_k, stages
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
        blends,
        content,
        log_counts,
        links,
        similar_from_index,
        als,
    )
    stages.note("module ready", done=True)
    main = blends.by_k[-1][1]
    info = {
        "version": step,
        "model_dir": os.path.abspath(config.model_dir),
        "data_dir": os.path.abspath(data_dir.path),
        "method": model.config.method,
        "num_items": n,
        "embedding_dim": int(item_embeddings.shape[1]),
        "popularity_prior": main.popularity_prior,
        "blend": dataclasses.asdict(main),
        "blends": blends.to_json(),
        "max_k": max_k,
        "index": config.index,
        "index_params": index.params,
        "index_build_seconds": round(index.build_seconds, 3),
        **recalls,
        "features": features,
        "signatures": ["similar_items", "similar_items_by_features", "item_embedding"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return module, info


def _index(config, blends, query_embeddings, item_embeddings, log_counts, max_k: int, stages):
    """The index and what export_info.json says of it: its Recall@10 against brute force on a
    sample of corpus items for the popular ranking of the largest list size's blend, and for
    its similar ranking when the index serves it too."""
    similar_from_index = config.index == "scann"
    main = blends.by_k[-1][1]
    index_queries, index_items = query_embeddings, item_embeddings  # plain cosine
    if shifted_index(blends, similar_from_index):
        index_queries, index_items = popularity.augment(
            query_embeddings, item_embeddings, log_counts, main.popularity_prior
        )
    n = len(item_embeddings)
    rng = np.random.default_rng(0)
    sample = rng.choice(n, size=min(config.recall_sample, n), replace=False)
    index, recall, tuning = build_index(
        config, index_items, index_queries[sample], max_k + 1, stages
    )
    similar_recall = None
    served = from_index(main, similar_from_index)
    if "similar" in served:
        similar_queries = index_queries[sample].copy()
        if shifted_index(blends, similar_from_index):
            similar_queries[:, -1] = -main.popularity_penalty
        similar_recall = index_lib.recall_against_brute_force(
            index, index_items, similar_queries, min(10, n)
        )
    stages.note(None, done=True)
    return index, {
        "recall_at_10_vs_brute_force": recall,
        # How the similar ranking is served: "index" (ScaNN, this recall on the same sample),
        # "exact" (over the whole corpus) or None (the blend has no similar ranking).
        "similar_ranking": None
        if not main.has_similar
        else ("index" if "similar" in served else "exact"),
        "similar_recall_at_10_vs_brute_force": similar_recall,
        "recall_sample": int(len(sample)),
        "index_tuning": tuning,
    }


def write(
    module: SimilarItemsModule, info: dict, config: ExportConfig, stages: Stages | None = None
) -> str:
    """Saves the module as `<export_dir>/<version>/` (temporary dir, then rename); its progress
    into `stages` (optional)."""
    stages = stages or Stages()
    step = info["version"]
    version_dir = os.path.join(config.export_dir, str(step))
    recall = info["recall_at_10_vs_brute_force"]
    if os.path.exists(version_dir) and not config.overwrite:
        raise ValueError(f"{version_dir} exists; pass --overwrite to replace this version")
    os.makedirs(config.export_dir, exist_ok=True)
    tmp = os.path.join(config.export_dir, f".tmp-{step}-{uuid.uuid4().hex[:8]}")
    try:
        stages.note("saving version %d", step)
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
        stages.note("saved the SavedModel", done=True)
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
    with progress_bar.Bar("export", len(STAGES), "stages") as bar:
        stages = Stages(bar)
        module, info = build(config, stages)
        info["export_path"] = write(module, info, config, stages)
    return info
