"""The blend of a popular and a similar ranking (blending.py) and the TF-IDF vectors it uses."""

import dataclasses
import math

import numpy as np
import pytest

from ssl_retrieval import blending, testing, tfidf
from ssl_retrieval.evaluation import evaluator

SLICES = ("all", "head", "tail", "cold")


def reference_merge(popular, similar, k, slots, cold=None, cold_slots=0):
    out = []
    cold = np.full((len(popular), 0), -1) if cold is None else cold
    for p, s, c in zip(popular.tolist(), similar.tolist(), cold.tolist(), strict=True):
        listed = []
        for i in p[:slots] + c[:cold_slots] + s + p[slots:]:
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


def test_merge_puts_cold_slots_after_the_popular_ones():
    popular = np.array([[5, 1, 2, 3]])
    similar = np.array([[1, 7, 5, 8]])
    cold = np.array([[9, 5, -1, -1]])  # 5 is listed already; padding after
    # 5, 1 popular; 9 cold (5 is a repeat, then padding); then 7 from the similar ranking.
    np.testing.assert_array_equal(blending.merge(popular, similar, 4, 2, cold, 2), [[5, 1, 9, 7]])
    rng = np.random.default_rng(1)
    for _ in range(30):
        popular, similar, cold = (
            np.stack([rng.permutation(25)[:10] for _ in range(6)]) for _ in range(3)
        )
        cold[rng.random(cold.shape) < 0.3] = -1
        k = int(rng.integers(1, 11))
        slots = int(rng.integers(0, k + 1))
        cold_slots = int(rng.integers(0, k - slots + 1))
        np.testing.assert_array_equal(
            blending.merge(popular, similar, k, slots, cold, cold_slots),
            reference_merge(popular, similar, k, slots, cold, cold_slots),
        )


def test_merger_merges_like_the_reference_for_every_slot_count():
    rng = np.random.default_rng(2)
    for trial in range(40):
        # Overlapping top-k lists (each row names an item once), padding and cold -1s.
        popular, similar, cold = (
            np.stack([rng.permutation(16)[:8] for _ in range(5)]) for _ in range(3)
        )
        similar[rng.random(similar.shape) < 0.15] = -1
        cold[rng.random(cold.shape) < 0.4] = -1
        with_cold = trial % 2 == 0
        merger = blending.Merger(popular, similar, cold if with_cold else None)
        assert merger.exact
        for k in (1, 5, 8):
            for slots in range(k + 1):
                for cold_slots in range(k - slots + 1) if with_cold else (0,):
                    expected = reference_merge(
                        popular, similar, k, slots, cold if with_cold else None, cold_slots
                    )
                    got = merger.merge(k, slots, cold_slots)
                    np.testing.assert_array_equal(got, expected)
    # A row naming an item twice is not a top-k list: merged by `merge`, still right.
    popular = np.array([[3, 3, 1, 2]])
    similar = np.array([[2, 5, 5, 6]])
    merger = blending.Merger(popular, similar)
    assert not merger.exact
    np.testing.assert_array_equal(merger.merge(4, 1), reference_merge(popular, similar, 4, 1))


def test_cold_slots_round_and_fit_beside_the_popular_ones():
    blend = blending.Blend(prior_share=0.4, cold_share=0.3, cold_content_weight=2.0)
    assert (blend.prior_slots(50), blend.cold_slots(50)) == (20, 15)
    assert (blend.prior_slots(5), blend.cold_slots(5)) == (2, 2)  # 1.5 rounds up
    assert blending.Blend(prior_share=0.5, cold_share=0.5).cold_slots(3) == 1  # 2 + 2 > 3
    assert blend.uses_content and not blending.Blend(prior_share=0.5, cold_share=0.2).uses_content
    assert set(blend.rankings()) == {"popular", "similar", "cold"}
    with pytest.raises(ValueError, match="cold_share"):
        blending.Blend(prior_share=0.8, cold_share=0.3)
    log_counts = np.log1p(np.array([0, 3, 0, 1]))
    np.testing.assert_array_equal(
        blending.only_cold(np.array([[2, 1, 0, -1], [3, 0, 2, 1]]), log_counts),
        [[2, -1, 0, -1], [-1, 0, 2, -1]],
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
    # With a margin, meeting the references is not enough: 5% better than each is.
    assert blending.objective_value(meets, references, margin=0.05)[0] < 1.05
    better = metrics_of([v * 1.1 for v in (0.5, 0.6, 0.5, 0.65)])
    assert blending.objective_value(better, references, margin=0.05)[0] == 1.05


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
        "cold_share": 0.0,
        "cold_content_weight": 0.0,
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
    # Cold slots: only with prior shares below 1, only where they fit, each cold ranking once.
    colds = []
    with_cold = blending.choose(
        lambda b: popular[b],
        lambda w, gamma: similar[w, gamma],
        evaluate_lists,
        cold_lists=lambda w: colds.append(w) or np.array([[13, 5, 12, -1]]),
        cold_shares=(0.0, 0.25, 0.75),
        cold_content_weights=(2.0,),
        **grid,
    )
    assert colds == [2.0]
    assert len(with_cold["grid"]) == 2 + 2 * 2 * 2 * 2  # 0.75 does not fit beside 0.5
    # beta 0.1, 2 popular slots (4, 5), 1 cold (13), then 12 from (w 1, gamma 0.5): the same 4
    # relevant items as without cold slots, and a tie goes to the blend without. A relevant
    # cold item that no other ranking finds changes the choice.
    assert with_cold["blend"]["cold_share"] == 0.0
    relevant.discard(13)
    relevant.add(20)
    found = blending.choose(
        lambda b: popular[b],
        lambda w, gamma: similar[w, gamma],
        evaluate_lists,
        cold_lists=lambda w: np.array([[20, -1, -1, -1]]),
        cold_shares=(0.0, 0.25),
        cold_content_weights=(2.0,),
        **grid,
    )
    assert found["blend"]["cold_share"] == 0.25
    assert found["blend"]["cold_content_weight"] == 2.0


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
    # Cold slots: after the popular ones, items without training pairs by cos + 2 tfidf.
    counts[rng.random(n) < 0.5] = 0.0
    cold_blend = dataclasses.replace(blend, cold_share=0.3, cold_content_weight=2.0)
    got = evaluator.blend_retriever(cold_blend, queries, items, counts, content.matrix)(rows, (10,))
    popular = queries @ items.T + 0.2 * counts[None, :]
    similar = queries @ items.T + 0.7 * dense_tfidf - 0.1 * counts[None, :]
    cold = queries @ items.T + 2.0 * dense_tfidf
    cold[:, counts > 0] = -np.inf
    for s in (popular, similar, cold):
        s[np.arange(n), np.arange(n)] = -np.inf
    orders = [np.argsort(-s[rows], axis=1, kind="stable")[:, :10] for s in (popular, similar, cold)]
    cold_order = np.where(np.isinf(np.take_along_axis(cold[rows], orders[2], 1)), -1, orders[2])
    expected = reference_merge(orders[0], orders[1], 10, 4, cold_order, 3)
    np.testing.assert_array_equal(got[10], expected)
    assert (counts[got[10][:, 4:7]] == 0).all()  # the cold slots hold cold items
    # prior_share 1: the popular ranking alone, as topk.top_k ranks it.
    alone = evaluator.blend_retriever(
        blending.Blend(popularity_prior=0.2), queries, items, counts, None
    )(rows, (10,))[10]
    np.testing.assert_array_equal(alone, orders[0])


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


def test_tfidf_build_matches_the_token_sets_of_the_corpus(tmp_path):
    from ssl_retrieval import data
    from ssl_retrieval.data_dir import DataDir

    data_dir = testing.make_data_dir(str(tmp_path / "data"))
    schema = DataDir.of(data_dir).schema
    names = tfidf.feature_names(schema)
    sets = []  # each item's tokens, read one item at a time
    for batch in data.items_dataset(data_dir, 7, schema=schema):
        lists = {n: batch[n].to_list() for n in names}
        for i in range(len(lists[names[0]])):
            sets.append({tfidf.token(n, v.decode()) for n in names for v in lists[n][i]})
    expected = tfidf.from_token_sets(names, sets)
    got = tfidf.build(data_dir)
    assert got.tokens == expected.tokens and got.features == expected.features
    np.testing.assert_array_equal(got.idf, expected.idf)
    for field in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got.matrix, field), getattr(expected.matrix, field))
    assert got.matrix.shape == expected.matrix.shape == (len(sets), len(expected.tokens))
    assert got.matrix.nnz > len(sets)  # items have several tokens
