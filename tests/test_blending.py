"""The blend of a popular and a similar ranking (blending.py) and the TF-IDF vectors it uses."""

import dataclasses
import math

import numpy as np
import pytest

from ssl_retrieval import blending, testing, tfidf
from ssl_retrieval.evaluation import evaluator

SLICES = ("all", "head", "tail", "cold")


def reference_merge(popular, similar, k, slots):
    out = []
    for p, s in zip(popular.tolist(), similar.tolist(), strict=True):
        listed = [i for i in p[:slots] if i >= 0]
        for i in s + p[slots:]:
            if i >= 0 and i not in listed and len(listed) < k:
                listed.append(i)
        out.append(listed + [-1] * (k - len(listed)))
    return np.array(out)


def test_merge_takes_the_popular_slots_then_new_similar_items():
    popular = np.array([[5, 1, 2, 3], [0, 1, 2, 3]])
    similar = np.array([[1, 7, 5, 8], [4, 0, -1, -1]])
    got = blending.merge(popular, similar, 4, 2)
    # Row 0: 5, 1 from popular; 7, 8 from similar (1 and 5 already listed).
    # Row 1: 0, 1; then 4 (0 is listed, then padding); then 2 from further down popular.
    np.testing.assert_array_equal(got, [[5, 1, 7, 8], [0, 1, 4, 2]])
    rng = np.random.default_rng(0)
    for _ in range(20):
        popular = np.stack([rng.permutation(30)[:10] for _ in range(8)])
        similar = np.stack([rng.permutation(30)[:10] for _ in range(8)])
        k, slots = int(rng.integers(1, 11)), int(rng.integers(0, 11))
        slots = min(slots, k)
        np.testing.assert_array_equal(
            blending.merge(popular, similar, k, slots), reference_merge(popular, similar, k, slots)
        )


def test_prior_slots_round_half_up_and_validate():
    assert blending.Blend(prior_share=0.3).prior_slots(50) == 15
    assert blending.Blend(prior_share=0.25).prior_slots(10) == 3  # 2.5 rounds up
    assert blending.Blend(prior_share=1.0).prior_slots(7) == 7
    assert blending.Blend(prior_share=1.0).single_ranking
    with pytest.raises(ValueError, match="prior_share"):
        blending.Blend(prior_share=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        blending.Blend(content_weight=-1)
    with pytest.raises(ValueError, match=">= 0"):
        blending.Blend(popularity_penalty=-0.1)


def metrics_of(values):
    return {s: {"recall@50": v} for s, v in zip(SLICES, values, strict=True)}


def test_objective_meets_every_reference_before_the_mean():
    references = {"a": metrics_of([0.5, 0.6, 0.1, 0.0]), "b": metrics_of([0.2, 0.1, 0.5, 0.6])}
    # Best reference per slice: 0.5, 0.6, 0.5, 0.6.
    meets = metrics_of([0.55, 0.6, 0.5, 0.6])
    higher_mean = metrics_of([0.9, 0.9, 0.6, 0.3])
    assert blending.objective_value(meets, references) == (1.0, pytest.approx(0.5625))
    worst = blending.objective_value(higher_mean, references)
    assert worst[0] == pytest.approx(0.5) and worst[1] == pytest.approx(0.675)
    assert blending.objective_value(meets, references) > worst
    assert blending.objective_value(higher_mean, None) > blending.objective_value(meets, None)
    # A slice without queries (NaN) and a slice no reference gets right do not count.
    nan_cold = metrics_of([0.5, 0.6, 0.5, float("nan")])
    assert blending.objective_value(nan_cold, references)[0] == 1.0


def test_choose_searches_the_grid_and_prefers_the_simpler_blend_on_ties():
    k = 4
    popular = {0.0: np.array([[0, 1, 2, 3]]), 0.1: np.array([[4, 5, 6, 7]])}
    similar = {
        (0.0, 0.0): np.array([[8, 9, 10, 11]]),
        (1.0, 0.0): np.array([[8, 4, 12, 9]]),
        (0.0, 0.5): np.array([[9, 12, 8, 10]]),
        (1.0, 0.5): np.array([[12, 13, 4, 8]]),
    }
    relevant = {4, 5, 12, 13}

    def evaluate_lists(lists):
        hits = len(relevant & set(lists[0].tolist())) / len(relevant)
        return metrics_of([hits] * 4)

    evaluated = []
    grid = dict(
        k=k,
        betas=(0.0, 0.1),
        content_weights=(0.0, 1.0),
        popularity_penalties=(0.0, 0.5),
        prior_shares=(1.0, 0.5),
    )
    choice = blending.choose(
        lambda b: popular[b],
        lambda w, gamma: evaluated.append((w, gamma)) or similar[w, gamma],
        evaluate_lists,
        **grid,
    )
    # beta 0.1 with half the slots: 4, 5, then 12, 13 from (w 1, gamma 0.5): all 4 relevant.
    assert choice["blend"] == {
        "popularity_prior": 0.1,
        "content_weight": 1.0,
        "prior_share": 0.5,
        "popularity_penalty": 0.5,
    }
    assert choice["objective"] == "slices"
    # Each similar ranking is computed once; prior_share 1 does not need one.
    assert sorted(evaluated) == sorted(similar)
    assert len(choice["grid"]) == 2 + 2 * 2 * 2  # share 1: per beta; 0.5: per beta, w, gamma
    flat = blending.choose(
        lambda b: popular[0.0],
        lambda w, gamma: similar[0.0, 0.0],
        lambda lists: metrics_of([0.1] * 4),
        **grid,
    )
    assert flat["blend"] == dataclasses.asdict(blending.Blend())


def test_tfidf_matches_a_numpy_reference():
    sets = [{"a=1", "b=x"}, {"a=1", "b=y"}, {"a=2", "b=x", "c=z"}, set()]
    got = tfidf.from_token_sets(["a", "b", "c"], sets)
    vocab = sorted({t for s in sets for t in s})
    n = len(sets)
    df = {t: sum(t in s for s in sets) for t in vocab}
    dense = np.array([[(math.log(n / df[t]) + 1) * (t in s) for t in vocab] for s in sets])
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    dense = dense / np.maximum(norms, 1e-12)
    cos = got.matrix @ got.matrix.T
    np.testing.assert_allclose(cos.toarray(), dense @ dense.T, rtol=1e-5, atol=1e-6)
    # Items given by their values get the same vectors; unknown values count nothing.
    items = [{"a": ["1"], "b": ["x"]}, {"a": ["2"], "b": ["x"], "c": ["z"], "d": ["?"]}]
    vectors = got.vectors(items)
    np.testing.assert_allclose(vectors.toarray(), got.matrix[[0, 2]].toarray(), rtol=1e-6)
    assert got.vectors([{"a": ["unseen"]}]).nnz == 0


def test_blend_retriever_ranks_like_numpy(tmp_path):
    data_dir = testing.make_data_dir(str(tmp_path / "data"))
    content = tfidf.build(data_dir)
    n = content.matrix.shape[0]
    assert n == len(evaluator.corpus_ids(data_dir))
    rng = np.random.default_rng(1)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    queries, items = unit(rng.normal(size=(n, 6))), unit(rng.normal(size=(n, 6)))
    counts = np.log1p(rng.integers(0, 50, n)).astype(np.float32)
    blend = blending.Blend(
        popularity_prior=0.2, content_weight=0.7, prior_share=0.4, popularity_penalty=0.1
    )
    retrieve = evaluator.blend_retriever(blend, queries, items, counts, content.matrix)
    rows = np.array([0, 3, 17])
    got = retrieve(rows, (5, 10))
    dense_tfidf = (content.matrix @ content.matrix.T).toarray()
    popular = queries @ items.T + 0.2 * counts[None, :]
    similar = queries @ items.T + 0.7 * dense_tfidf - 0.1 * counts[None, :]
    for s in (popular, similar):
        s[np.arange(n), np.arange(n)] = -np.inf
    popular_order = np.argsort(-popular[rows], axis=1, kind="stable")
    similar_order = np.argsort(-similar[rows], axis=1, kind="stable")
    # Each k is merged on its own: 4 of 10 slots popular, and 2 of 5 (not the first 5 of 10).
    for k, slots in ((10, 4), (5, 2)):
        expected = reference_merge(popular_order[:, :k], similar_order[:, :k], k, slots)
        np.testing.assert_array_equal(got[k], expected)
    assert not np.array_equal(got[5], got[10][:, :5])
    # prior_share 1: the popular ranking alone, as topk.top_k ranks it.
    alone = evaluator.blend_retriever(
        blending.Blend(popularity_prior=0.2), queries, items, counts, None
    )(rows, (10,))[10]
    np.testing.assert_array_equal(alone, popular_order[:, :10])


def test_resolve_reads_the_chosen_blend_and_takes_numbers(tmp_path):
    model_dir = str(tmp_path)
    assert blending.resolve(model_dir) == blending.Blend()
    blending.save(
        model_dir,
        {"blend": {"popularity_prior": 0.05, "content_weight": 1.0, "prior_share": 0.3}},
    )
    # A blend.json written before the similar ranking had a penalty reads as penalty 0.
    assert blending.resolve(model_dir) == blending.Blend(0.05, 1.0, 0.3, 0.0)
    assert blending.resolve(model_dir, prior_share="1") == blending.Blend(0.05, 1.0, 1.0)
    assert blending.resolve(model_dir, popularity_penalty="0.1").popularity_penalty == 0.1
    with pytest.raises(ValueError, match="content_weight"):
        blending.resolve(model_dir, content_weight="lots")
    with pytest.raises(ValueError, match="prior_share"):
        blending.resolve(model_dir, prior_share="2")


def test_content_vectors_in_the_graph_match_numpy_for_any_unicode_value():
    from ssl_retrieval.compat import tf
    from ssl_retrieval.serving import exporter

    content = tfidf.from_token_sets(
        ["maintainer", "tags"],
        [{"maintainer=Jörg", "tags=ä"}, {"maintainer=Jörg"}, {"maintainer=x", "tags=ä"}],
    )
    vectors = exporter.ContentVectors(content)
    given = {
        "maintainer": tf.constant([["Jörg"], ["x"], ["unknown"]]),
        "tags": tf.constant([["ä", ""], ["ä", "ä"], ["", ""]]),
    }
    expected = content.vectors(
        [{"maintainer": ["Jörg"], "tags": ["ä"]}, {"maintainer": ["x"], "tags": ["ä"]}, {}]
    ).toarray()
    np.testing.assert_allclose(vectors.of_features(given).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        vectors.of_rows(tf.constant([2, 0], tf.int64)).numpy(),
        content.matrix[[2, 0]].toarray(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        vectors.similarities(tf.constant(expected[:2], tf.float32)).numpy(),
        (content.matrix[[0, 2]] @ content.matrix.T).toarray(),
        rtol=1e-5,
    )
