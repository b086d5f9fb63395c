"""The export ranks as evaluation does: the popularity prior in the index, blends of rankings
merged in the SavedModel's graph by the same `ranking.merge`, a blend per list size, the
known links; and the exact top-k and TF-IDF it computes in the graph."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from ssl_retrieval import testing
from ssl_retrieval.compat import tf
from ssl_retrieval.data import corpus_ids, pair_indices
from ssl_retrieval.evaluation import evaluator
from ssl_retrieval.model import two_tower as model_lib
from ssl_retrieval.model.two_tower import embed_corpus
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking import factors, links, popularity, retrieve, scores, tfidf, topk
from ssl_retrieval.ranking.config import BlendOverrides
from ssl_retrieval.serving import api, exporter

IDS = ["item00000", "item00007", "item00100"]


@pytest.fixture(scope="module")
def trained(cfm_model):
    """A model trained 30 steps, its corpus and the terms of its rankings."""
    data_dir, model_dir = cfm_model["data_dir"], cfm_model["model_dir"]
    model = model_lib.load_from_model_dir(model_dir)
    queries, items = embed_corpus(model, data_dir)
    ids = np.array(corpus_ids(data_dir))
    corpus = retrieve.Corpus(
        queries,
        items,
        popularity.log_counts(data_dir, ids),
        tfidf.build(data_dir).matrix,
        links.matrix(*pair_indices(data_dir, "train", ids), len(ids)),
    )
    rows = np.array([int(np.where(ids == i)[0][0]) for i in IDS])
    return {"model_dir": model_dir, "model": model, "ids": ids, "corpus": corpus, "rows": rows}


def export(trained, tmp_path, index="brute_force", **blend):
    """The module and info of an export with the blend's numbers given (brute force: exact)."""
    numbers = {name: str(value) for name, value in blend.items() if name in blend_lib.NAMES}
    overrides = BlendOverrides(**numbers)
    config = exporter.ExportConfig(
        data_dir=None,
        model_dir=trained["model_dir"],
        export_dir=str(tmp_path / "export"),
        k=20,
        index=index,
        blend=overrides,
    )
    return exporter.build(config) + (config,)


def evaluation_ids(trained, blend, k, corpus=None):
    """What evaluation lists for the test ids under `blend` (over `corpus`, default the
    trained model's)."""
    lists = retrieve.retriever(corpus or trained["corpus"], blend_lib.Blends.single(blend, 100))
    return trained["ids"][lists(trained["rows"], (k,))[k]].tolist()


def served_ids(module, k, ids=IDS):
    return (
        module.similar_items(tf.constant(ids), tf.constant(k))["ids"].numpy().astype(str).tolist()
    )


def test_popularity_prior_is_built_into_the_index(trained, tmp_path):
    """With beta, both signatures rank by cos + beta * log(1 + training count)."""
    module, info, _ = export(trained, tmp_path, popularity_prior=0.3)
    assert info["popularity_prior"] == 0.3
    corpus, ids = trained["corpus"], trained["ids"]
    scores = corpus.query_embeddings @ corpus.item_embeddings.T + 0.3 * corpus.log_counts
    row = trained["rows"][0]
    scores[row, row] = -np.inf
    got = module.similar_items(tf.constant(IDS[:1]), tf.constant(5))
    assert got["ids"].numpy().astype(str)[0].tolist() == ids[np.argsort(-scores[row])[:5]].tolist()
    np.testing.assert_allclose(
        got["scores"].numpy()[0], -np.sort(-scores[row])[:5], rtol=1e-5, atol=1e-5
    )
    assert got["sources"].numpy()[0].tolist() == [b"popular"] * 5
    inputs = feature_inputs()
    by_features = module.similar_items_by_features(inputs, tf.constant(5))
    z = trained["model"].query_tower(exporter.to_model_features(inputs, info["features"]))
    feature_scores = z.numpy() @ corpus.item_embeddings.T + 0.3 * corpus.log_counts
    np.testing.assert_allclose(
        by_features["scores"].numpy(), -np.sort(-feature_scores)[:, :5], rtol=1e-5, atol=1e-5
    )


def feature_inputs():
    return {
        "item_id": tf.constant([[""], ["item00005"]]),
        "brand": tf.constant([["brand3"], [""]]),
        "category": tf.constant([["cat1"], ["cat2"]]),
        "tags": tf.constant([["tag3_1", "tag3_2"], ["", ""]]),
        "price": tf.constant([9.5, float("nan")]),
    }


def feature_query_terms(trained, info):
    """The terms that rank the queries of `feature_inputs`: the query tower's cosine with every
    item and the TF-IDF similarity of the given values, as numpy arrays [2, items]."""
    content = tfidf.build(info["data_dir"])
    vectors = content.vectors(
        [
            {"brand": ["brand3"], "category": ["cat1"], "tags": ["tag3_1", "tag3_2"]},
            {"category": ["cat2"]},
        ]
    )
    features = exporter.to_model_features(feature_inputs(), info["features"])
    z = trained["model"].query_tower(features).numpy()
    return z @ trained["corpus"].item_embeddings.T, (vectors @ content.matrix.T).toarray()


def test_blend_without_tfidf_serves_both_rankings_from_the_scann_index(trained, tmp_path):
    """w = 0: the similar ranking is a search of the same ScaNN index, queries ending in -gamma
    instead of beta; its lists are evaluation's exact lists up to the index's recall."""
    blend = blend_lib.Blend(0.3, 0.0, 0.4, 0.5)  # a large gamma: a wrong sign would show
    module, info, _ = export(trained, tmp_path, "scann", **dataclasses.asdict(blend))
    assert info["similar_ranking"] == "index"
    assert info["similar_recall_at_10_vs_brute_force"] >= 0.9
    assert not hasattr(module, "item_embeddings")  # no corpus copy for an exact ranking
    expected = evaluation_ids(trained, blend, 10)
    got = served_ids(module, 10)
    overlap = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, expected, strict=True)])
    assert overlap >= 0.9
    assert all(len(set(row)) == 10 and row[0] != "" for row in got)  # no duplicates, full lists
    # With TF-IDF the similar ranking stays exact.
    with_tfidf = dataclasses.replace(blend, content_weight=1.0)
    _, info, _ = export(trained, tmp_path, "scann", **dataclasses.asdict(with_tfidf))
    assert info["similar_ranking"] == "exact"


@pytest.mark.parametrize(
    "blend",
    [
        blend_lib.Blend(0.3, 1.5, 0.4, 0.05),
        blend_lib.Blend(0.3, 1.5, 0.4, 0.05, cold_share=0.3, cold_content_weight=2.0),
        blend_lib.Blend(
            0.3, 1.5, 0.3, 0.05, cold_share=0.2, cold_content_weight=2.0, links_share=0.3
        ),
    ],
    ids=["similar", "cold", "linked"],
)
def test_blends_are_served_as_evaluation_ranks(trained, tmp_path, monkeypatch, blend):
    """Both signatures merge the index's popular ranking with the exact ones (similar, cold,
    linked) as evaluation does; the exact rankings are made two queries at a time here, so the
    three ids take a whole and a partial chunk."""
    monkeypatch.setattr(exporter, "EXACT_CHUNK", 2)
    module, info, config = export(trained, tmp_path, **dataclasses.asdict(blend))
    assert info["blends"] == {"50": blend_lib.to_json(blend)}
    for k in (1, 5, 12):
        assert served_ids(module, k) == evaluation_ids(trained, blend, k), k
    got = module.similar_items(tf.constant(IDS), tf.constant(10))
    sources = got["sources"].numpy().astype(str)
    assert set(sources.ravel()) <= set(blend.rankings())
    # Each item is named with the ranking that listed it: cold ones are cold, linked ones linked.
    corpus, ids = trained["corpus"], list(trained["ids"])
    for row, item_ids, names in zip(
        trained["rows"], got["ids"].numpy().astype(str), sources, strict=True
    ):
        for item, name in zip(item_ids, names, strict=True):
            if name == "cold":
                assert corpus.log_counts[ids.index(item)] == 0
            if name == "linked":
                assert corpus.links[row, ids.index(item)] > 0
    # From features: the query tower and the TF-IDF of the given values; no known links.
    inputs = feature_inputs()
    cos, similarity = feature_query_terms(trained, info)

    def order(score):
        ranked = np.argsort(-score, axis=1, kind="stable")[:, :20]
        return np.where(np.isinf(np.take_along_axis(score, ranked, 1)), -1, ranked)

    counts = corpus.log_counts[None, :]
    lists = {
        "popular": order(cos + blend.popularity_prior * counts),
        "similar": order(
            cos + blend.content_weight * similarity - blend.popularity_penalty * counts
        ),
        "cold": order(np.where(counts > 0, -np.inf, cos + blend.cold_content_weight * similarity)),
        "linked": np.full((2, 20), -1),
    }
    expected = testing.merge_reference(lists, blend.segments(10), 10)
    got = module.similar_items_by_features(inputs, tf.constant(10))["ids"].numpy().astype(str)
    assert got.tolist() == trained["ids"][expected].tolist()
    # The blend survives saving and loading.
    path = exporter.write(module, info, config)
    loaded = api.SimilarItems(path)
    assert [[n.id for n in row] for row in loaded.similar(IDS, k=5)] == evaluation_ids(
        trained, blend, 5
    )
    # What a person reads: the score never rises down a list (1, then 1/n less per rank), and
    # each item names the ranking that listed it with that ranking's own score, which do rise:
    # the raw signature's outputs, unchanged.
    raw = module.similar_items(tf.constant(IDS), tf.constant(10))
    rows = loaded.similar(IDS, k=10)
    for row, raw_scores, raw_sources in zip(
        rows, raw["scores"].numpy(), raw["sources"].numpy(), strict=True
    ):
        assert [n.score for n in row] == pytest.approx([(10 - r) / 10 for r in range(10)])
        assert [n.source for n in row] == [s.decode() for s in raw_sources]
        assert [n.source_score for n in row] == pytest.approx(raw_scores.tolist(), rel=1e-6)
    sources = {n.source for row in rows for n in row}
    assert len(sources) > 1 and sources <= set(blend_lib.RANKINGS)
    assert any(
        later.source_score > earlier.source_score
        for row in rows
        for earlier, later in zip(row, row[1:], strict=False)
    ), "a blended list whose source scores never rise would not test the rank score"
    # The command prints the same: rank, id, the list's score, (source, its score).
    printed = subprocess.run(
        [sys.executable, "-m", "ssl_retrieval.similar", f"--export_dir={path}"]
        + [f"--item_ids={IDS[0]}", "--k=10"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    lines = [line.split() for line in printed if line.strip()[:1].isdigit()]
    assert [(line[1], float(line[2])) for line in lines] == [
        (n.id, pytest.approx(n.score, abs=0.005)) for n in rows[0]
    ]
    assert [line[3].lstrip("(") for line in lines] == [n.source for n in rows[0]]


def test_a_fused_blend_is_served_as_evaluation_ranks(trained, tmp_path, monkeypatch):
    """The popular slots from a fused ranking (exact in the graph), beside cold and similar
    slots; by id with every term, the links' factorisation read from beside blend.json; from
    features, the fused score of the query tower's embedding and the values' TF-IDF (no known
    links, no factors)."""
    monkeypatch.setattr(exporter, "EXACT_CHUNK", 2)
    rng = np.random.default_rng(11)
    weights = tuple(rng.normal(size=len(scores.FEATURES)))
    blend = blend_lib.Blend(
        content_weight=1.5, prior_share=0.6, cold_share=0.2, cold_content_weight=2.0, fusion=weights
    )
    n = len(trained["ids"])
    # Factors large enough that the term reorders the lists (checked below).
    als = factors.Factors(*(3 * rng.normal(size=(2, n, 4))).astype(np.float32))
    corpus = dataclasses.replace(trained["corpus"], als=als)
    model_dir = trained["model_dir"]
    blend_lib.save(model_dir, {"blends": blend_lib.Blends.single(blend).to_json()})
    factors.save(model_dir, als)
    try:
        module, info, _ = export(trained, tmp_path, "scann")
        # Evaluation reads the same factors from the model dir.
        evaluated = evaluator.model_retriever(model_dir)(trained["rows"], (12,), None)[12]
    finally:
        os.remove(os.path.join(model_dir, blend_lib.FILE))
        factors.remove(model_dir)
    assert info["blends"]["50"]["fusion"]["cos"] == weights[0]
    for k in (1, 5, 12):
        assert served_ids(module, k) == evaluation_ids(trained, blend, k, corpus), k
    assert trained["ids"][evaluated].tolist() == evaluation_ids(trained, blend, 12, corpus)
    without = dataclasses.replace(corpus, als=factors.Factors(0 * als.users, als.items))
    assert evaluation_ids(trained, blend, 12, without) != evaluation_ids(trained, blend, 12, corpus)
    inputs = feature_inputs()
    cos, similarity = feature_query_terms(trained, info)
    cos, similarity = tf.constant(cos), tf.constant(similarity, tf.float32)
    counts = tf.constant(trained["corpus"].log_counts)

    def order(ranking):
        score = scores.score(
            ranking, cos, tfidf=similarity, log_counts=counts, log_links=tf.zeros_like(cos)
        ).numpy()
        ranked = np.argsort(-score, axis=1, kind="stable")[:, :20]
        return np.where(np.isinf(np.take_along_axis(score, ranked, 1)), -1, ranked)

    lists = {name: order(ranking) for name, ranking in blend.rankings().items()}
    expected = testing.merge_reference(lists, blend.segments(10), 10)
    answer = module.similar_items_by_features(inputs, tf.constant(10))
    assert answer["ids"].numpy().astype(str).tolist() == trained["ids"][expected].tolist()
    # The fused ranking's slots are named as such, not as the popularity prior's.
    assert set(answer["sources"].numpy()[:, 0].tolist()) == {b"fused"}


def test_each_list_size_is_served_with_its_own_blend(trained, tmp_path):
    """A blend per list size: a request for k takes the blend of the smallest size >= k."""
    small = blend_lib.Blend(0.3, 1.0, 0.3, 0.0, links_share=0.4)
    large = blend_lib.Blend(0.0, 1.5, 0.5, 0.05, cold_share=0.2, cold_content_weight=2.0)
    model_dir = trained["model_dir"]
    blend_lib.save(model_dir, {"blends": blend_lib.Blends(((5, small), (20, large))).to_json()})
    try:
        module, info, _ = export(trained, tmp_path)
    finally:
        os.remove(os.path.join(model_dir, blend_lib.FILE))
    assert info["blends"] == {"5": blend_lib.to_json(small), "20": blend_lib.to_json(large)}
    for k, blend in ((3, small), (5, small), (6, large), (20, large)):
        assert served_ids(module, k) == evaluation_ids(trained, blend, k), k


@pytest.mark.parametrize(
    "n,k,chunk", [(5000, 101, 64), (1000, 7, 1024), (130, 20, 16), (40, 60, 8)]
)
def test_exact_top_k_is_tf_top_k(n, k, chunk):
    """The chunked top-k returns what tf.math.top_k returns, ties (lower index first) and -inf
    entries included."""
    rng = np.random.default_rng(n)
    scores = np.round(rng.standard_normal((6, n)), 1).astype(np.float32)  # many ties
    scores[0, : n // 2] = -np.inf
    scores[1, :] = -np.inf
    scores[1, 3] = 0.5
    expected = tf.math.top_k(scores, min(k, n))
    values, indices = topk.exact_top_k(tf.constant(scores), k, chunk=chunk)
    np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
    finite = np.isfinite(expected.values.numpy())
    np.testing.assert_array_equal(indices.numpy()[finite], expected.indices.numpy()[finite])


def test_content_vectors_by_features_are_the_corpus_rows():
    """TF-IDF vectors of items given by features equal their corpus rows, repeated and unknown
    values aside, and their similarities are the matrix's cosines, both ways."""
    content = tfidf.from_token_sets(
        ["tags", "brand"],
        [{"tags=a", "tags=b", "brand=x"}, {"tags=b", "brand=y"}, {"tags=a", "brand=x"}, set()],
    )
    vectors = tfidf.ContentVectors(content)
    inputs = {
        "tags": tf.constant([["a", "b", "a"], ["b", "zzz", ""], ["", "a", ""]]),
        "brand": tf.constant([["x"], ["y"], ["x"]]),
    }
    by_rows = vectors.of_rows(tf.constant([0, 1, 2], tf.int64)).numpy()
    np.testing.assert_allclose(by_rows, content.matrix[:3].toarray(), rtol=1e-6)
    np.testing.assert_allclose(vectors.of_features(inputs).numpy(), by_rows, rtol=1e-6)
    expected = (content.matrix[:3] @ content.matrix.T).toarray()
    # Posting lists for small batches, the sparse-dense product for large ones.
    np.testing.assert_allclose(vectors.similarities(by_rows).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(vectors._by_postings(by_rows).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(vectors._by_product(by_rows).numpy(), expected, atol=1e-6)
    many = tf.tile(tf.constant(by_rows), [tfidf.POSTINGS_MAX_BATCH, 1])
    np.testing.assert_allclose(
        vectors.similarities(many).numpy(),
        np.tile(expected, [tfidf.POSTINGS_MAX_BATCH, 1]),
        atol=1e-6,
    )
