"""The ranking package: scores, links, the merge, blends and their lists, TF-IDF; each against a
small numpy reference or a hand-checked toy."""

import dataclasses
import math

import numpy as np
import pytest

from ssl_retrieval import testing
from ssl_retrieval.compat import tf
from ssl_retrieval.data import corpus_ids
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking import factors, links, merge, retrieve, scores, tfidf

reference_merge = testing.merge_reference


def random_lists(rng, rows=6, width=10, items=25, padding=0.2):
    """Top lists of the four rankings: each row names an item once, some -1 padding."""
    out = {}
    for name in blend_lib.RANKINGS:
        lists = np.stack([rng.permutation(items)[:width] for _ in range(rows)])
        lists[rng.random(lists.shape) < padding] = -1
        out[name] = lists
    return out


def test_merge_walks_the_segments_and_keeps_each_item_where_it_first_comes():
    lists = {
        "popular": np.array([[5, 1, 2, 3], [0, 1, 2, 3]]),
        "similar": np.array([[1, 7, 5, 8], [4, 0, -1, -1]]),
    }
    segments = [("popular", 0, 2), ("similar", 0, None), ("popular", 2, None)]
    got = merge.Lists(lists).merge(segments, 4).indices.numpy()
    # Row 0: 5, 1 from popular; 7, 8 from similar (1 and 5 already listed).
    # Row 1: 0, 1; then 4 (0 is listed, then padding); then 2 from further down popular.
    np.testing.assert_array_equal(got, [[5, 1, 7, 8], [0, 1, 4, 2]])


def test_merge_matches_the_reference_for_every_blend_and_list_size():
    rng = np.random.default_rng(0)
    for _ in range(12):
        lists = random_lists(rng)
        merged = merge.Lists(lists)  # positions found once, reused by every merge below
        for links_share in (0.0, 0.2):
            for prior_share in (1.0 - links_share, 0.5, 0.2):
                for cold_share in (0.0, 0.3):
                    if cold_share > 1 - prior_share - links_share + 1e-9:
                        continue
                    blend = blend_lib.Blend(
                        prior_share=prior_share, cold_share=cold_share, links_share=links_share
                    )
                    for k in (1, 4, 7, 10):
                        segments = blend.segments(k)
                        used = {n: lists[n] for n, _, _ in segments}
                        expected = reference_merge(used, segments, k)
                        got = merged.merge(segments, k).indices.numpy()
                        np.testing.assert_array_equal(got, expected, err_msg=f"{blend} k={k}")


def test_merged_lists_carry_each_item_s_score_and_ranking():
    lists = {"popular": np.array([[5, 1, 2]]), "cold": np.array([[9, 5, -1]])}
    values = {"popular": np.array([[0.9, 0.8, 0.7]]), "cold": np.array([[0.3, 0.2, -np.inf]])}
    segments = [("popular", 0, 1), ("cold", 0, 2), ("popular", 1, None)]
    got = merge.Lists(lists, values).merge(segments, 4)
    np.testing.assert_array_equal(got.indices.numpy(), [[5, 9, 1, 2]])
    np.testing.assert_allclose(got.scores.numpy(), [[0.9, 0.3, 0.8, 0.7]])
    names = [got.names[s] for s in got.sources.numpy()[0]]
    assert names == ["popular", "cold", "popular", "popular"]


def test_slots_round_half_up_alike_for_python_and_tensor_list_sizes():
    for share in (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 1 / 3, 0.7):
        for k in range(1, 60):
            expected = int(math.floor(share * k + 0.5))
            assert blend_lib.slots(share, k) == expected
            assert int(blend_lib.slots(share, tf.constant(k))) == expected, (share, k)
    assert blend_lib.slots(0.25, 10) == 3  # 2.5 rounds up


def test_blend_segments_and_validation():
    blend = blend_lib.Blend(
        prior_share=0.4, cold_share=0.3, cold_content_weight=2.0, links_share=0.2
    )
    assert blend.segments(10) == [
        ("linked", 0, 2),
        ("popular", 0, 4),
        ("cold", 0, 3),
        ("similar", 0, None),
        ("popular", 4, None),
    ]
    assert set(blend.rankings()) == {"linked", "popular", "cold", "similar"}
    assert blend.uses_content and blend.uses_links
    # Shares that fill the list leave no similar ranking: the popular one fills what is left.
    full = blend_lib.Blend(prior_share=0.6, links_share=0.4)
    assert not full.has_similar and set(full.rankings()) == {"linked", "popular"}
    assert full.segments(5) == [("linked", 0, 2), ("popular", 0, 3), ("popular", 3, None)]
    assert blend_lib.Blend().segments(7) == [("popular", 0, 7), ("popular", 7, None)]
    assert blend_lib.Blend(prior_share=0.5, cold_share=0.5).segments(3)[1] == ("cold", 0, 1)
    for bad, match in (
        (dict(prior_share=0.8, cold_share=0.3), "cold_share"),
        (dict(prior_share=0.9, links_share=0.2), "prior_share"),
        (dict(prior_share=1.5), "prior_share"),
        (dict(content_weight=-1), ">= 0"),
        (dict(popularity_penalty=-0.1), ">= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            blend_lib.Blend(**bad)


def test_blends_take_the_blend_of_the_smallest_list_size_at_least_k(tmp_path):
    small, large = blend_lib.Blend(0.12), blend_lib.Blend(0.05, prior_share=0.6)
    blends = blend_lib.Blends(((10, small), (50, large)))
    assert [blends.for_k(k) for k in (1, 10, 11, 50, 100)] == [small, small, large, large, large]
    assert blend_lib.Blends.from_json(blends.to_json()) == blends
    with pytest.raises(ValueError, match="distinct"):
        blend_lib.Blends(((50, large), (10, small)))
    model_dir = str(tmp_path)
    assert blend_lib.load(model_dir) == blend_lib.Blends.single(blend_lib.Blend())
    blend_lib.save(model_dir, {"blends": blends.to_json()})
    assert blend_lib.load(model_dir) == blends
    resolved = blend_lib.resolve(model_dir, prior_share="1", links_share="auto")
    assert [b.prior_share for _, b in resolved] == [1.0, 1.0]
    assert [b.popularity_prior for _, b in resolved] == [0.12, 0.05]


def test_resolve_reads_older_blend_files_and_takes_numbers(tmp_path):
    model_dir = str(tmp_path)
    # A blend.json written before blends per list size, and before the similar ranking had a
    # penalty: one blend for every k, penalty 0.
    blend_lib.save(
        model_dir,
        {"blend": {"popularity_prior": 0.05, "content_weight": 1.0, "prior_share": 0.3}},
    )
    (only,) = blend_lib.resolve(model_dir).by_k
    assert only[1] == blend_lib.Blend(0.05, 1.0, 0.3, 0.0)
    assert blend_lib.resolve(model_dir).for_k(10) == blend_lib.resolve(model_dir).for_k(500)
    assert blend_lib.resolve(model_dir, prior_share="1").for_k(5).prior_share == 1.0
    with pytest.raises(ValueError, match="content_weight"):
        blend_lib.resolve(model_dir, content_weight="lots")
    with pytest.raises(ValueError, match="prior_share"):
        blend_lib.resolve(model_dir, prior_share="2")


def test_scores_follow_the_formula_and_keep_only_their_items():
    rng = np.random.default_rng(3)
    cos = rng.normal(size=(3, 6)).astype(np.float32)
    cos[0, 0] = -np.inf  # the query's own item
    tf_idf = rng.random((3, 6)).astype(np.float32)
    counts = np.log1p(np.array([0, 4, 0, 1, 9, 2], np.float32))
    log_links = np.log1p(
        np.array([[0, 2, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 3]], np.float32)
    )
    terms = dict(tfidf=tf_idf, log_counts=counts, log_links=log_links)

    def got(ranking):
        return scores.score(
            ranking, tf.constant(cos), **{k: tf.constant(v) for k, v in terms.items()}
        ).numpy()

    np.testing.assert_allclose(got(scores.popular(0.1)), cos + 0.1 * counts, rtol=1e-6)
    np.testing.assert_allclose(
        got(scores.similar(2.0, 0.05)), cos + 2 * tf_idf - 0.05 * counts, rtol=1e-6
    )
    cold = np.where(counts > 0, -np.inf, cos + 4 * tf_idf)
    np.testing.assert_allclose(got(scores.cold(4.0)), cold, rtol=1e-6)
    linked = np.where(log_links > 0, cos + scores.LINKS_WEIGHT * log_links, -np.inf)
    np.testing.assert_allclose(got(scores.linked()), linked, rtol=1e-6)
    # Linked items come by count first: 2 links beat 1 whatever the cosines.
    order = np.argsort(-linked[0])
    assert order[:2].tolist() == [1, 3]
    with pytest.raises(ValueError, match="keeps one of"):
        scores.Ranking(only="hubs")


def test_links_count_both_directions_and_read_alike_in_the_graph():
    counts = links.matrix([0, 0, 1, 2, 2], [1, 1, 0, 3, 2], num_items=4)
    expected = np.array([[0, 3, 0, 0], [3, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    np.testing.assert_array_equal(counts.toarray(), expected)  # (2, 2): no self link
    rows = np.array([1, 3, 0])
    np.testing.assert_allclose(links.log_links(counts, rows, 1, 4), np.log1p(expected[rows, 1:4]))
    in_graph = links.LinkRows(counts).log_links(tf.constant([1, -1, 3], tf.int64)).numpy()
    np.testing.assert_allclose(in_graph, np.log1p(expected[[1, 0, 3]] * [[1], [0], [1]]))


def test_two_step_paths_count_the_items_linked_to_both_in_numpy_and_in_the_graph():
    rng = np.random.default_rng(4)
    n = 9
    counts = links.matrix(rng.integers(0, n, 25), rng.integers(0, n, 25), num_items=n)
    linked = (counts.toarray() > 0).astype(np.float32)
    # paths[q, c] = #{x : q - x and x - c linked}, whatever the link counts.
    expected = np.array([[np.sum(linked[q] * linked[:, c]) for c in range(n)] for q in range(n)])
    assert expected.max() >= 2 and counts.max() >= 2  # counts and paths both above 1 somewhere
    rows = np.array([4, 0, 7])
    got = links.log_paths(links.indicator(counts), rows, 2, 8)
    np.testing.assert_allclose(got, np.log1p(expected[rows, 2:8]), rtol=1e-6)
    in_graph = links.LinkRows(counts).log_paths(tf.constant([4, -1, 7], tf.int64)).numpy()
    np.testing.assert_allclose(in_graph, np.log1p(expected[[4, 0, 7]] * [[1], [0], [1]]), rtol=1e-6)


def test_the_item_knn_score_is_the_profile_times_the_similarity_in_numpy_and_in_the_graph():
    rng = np.random.default_rng(5)
    n = 12
    counts = links.matrix(rng.integers(0, n, 40), rng.integers(0, n, 40), num_items=n)
    similarity = links.knn_similarity(counts)
    dense = similarity.toarray()
    assert (np.diag(dense) > 0).any() and dense.shape == (n, n)  # items are their own neighbours
    # Implicit's BM25 item-kNN: cosine of BM25-weighted link rows, the largest per row kept.
    assert (similarity.getnnz(axis=1) <= links.KNN_NEIGHBOURS).all()
    # knn[q, c] = sum_x (e_q + counts[q])[x] * S[x, c].
    profiles = np.eye(n, dtype=np.float32) + counts.toarray()
    expected = profiles @ dense
    assert (expected > 0).sum() > n  # more than the items themselves score
    rows = np.array([4, 0, 7])
    got = links.knn_scores(counts, similarity, rows).toarray()
    np.testing.assert_allclose(got, expected[rows], rtol=1e-5, atol=1e-6)
    graph = links.LinkRows(counts, similarity)
    in_graph = graph.log_knn(tf.constant([4, -1, 7], tf.int64)).numpy()
    want = np.log1p(expected[[4, 0, 7]] * [[1], [0], [1]])  # no row: no profile
    np.testing.assert_allclose(in_graph, want, rtol=1e-5, atol=1e-6)
    # Every call gives the same matrix (one thread): evaluation and export agree.
    assert (links.knn_similarity(counts) != similarity).nnz == 0


def test_the_item_knn_build_counts_its_pairs_and_warns_when_a_hub_makes_them_many(
    monkeypatch, caplog
):
    # A hub linked to 6 items, and one other link: degrees 6, 1 x 5, 2, 1.
    query = np.array([0, 0, 0, 0, 0, 0, 1])
    candidate = np.array([1, 2, 3, 4, 5, 6, 7])
    counts = links.matrix(query, candidate, num_items=8)
    degrees = (counts.toarray() > 0).sum(axis=1)
    assert links.knn_pairs(counts) == (degrees**2).sum() == 36 + 4 + 5 + 1
    links.knn_similarity(counts)
    assert "item-kNN similarity" not in caplog.text  # 46 pairs: quick, nothing said
    monkeypatch.setattr(links, "KNN_SLOW_PAIRS", 40)
    links.knn_similarity(counts)
    assert "4.6e+01 pairs" in caplog.text and "--noblend_item_knn" in caplog.text


def test_evaluation_s_knn_terms_are_the_same_by_corpus_chunk_and_query_batch():
    """The scorer keeps a batch's kNN scores and slices them per corpus chunk: a new batch
    must not read the last one's."""
    rng = np.random.default_rng(6)
    n = 12
    counts = links.matrix(rng.integers(0, n, 40), rng.integers(0, n, 40), num_items=n)
    corpus = retrieve.Corpus(
        np.eye(n, 4, dtype=np.float32), np.eye(n, 4, dtype=np.float32), np.zeros(n), links=counts
    )
    knn_only = scores.fused([1.0 if f == "logknn" else 0.0 for f in scores.FEATURES])
    score = retrieve.scorer(corpus, {"knn": knn_only})
    expected = np.log1p((np.eye(n) + counts.toarray()) @ corpus.item_knn().toarray())
    for rows in (np.array([0, 3, 5]), np.array([7, 1]), np.array([0, 3, 5])):
        for start, stop in ((0, 5), (5, 12)):
            ((_, got),) = list(score(rows, start, stop))
            want = expected[rows, start:stop]
            own = [(i, r - start) for i, r in enumerate(rows) if start <= r < stop]
            mask = np.ones_like(want, bool)
            for i, j in own:  # the query's own item is excluded (-inf)
                mask[i, j] = False
            np.testing.assert_allclose(np.asarray(got)[mask], want[mask], rtol=1e-5, atol=1e-6)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_retriever_ranks_every_blend_like_numpy(tmp_path):
    data_dir = testing.make_data_dir(str(tmp_path / "data"))
    content = tfidf.build(data_dir)
    n = content.matrix.shape[0]
    assert n == len(corpus_ids(data_dir))
    rng = np.random.default_rng(1)
    queries, items = unit(rng.normal(size=(n, 6))), unit(rng.normal(size=(n, 6)))
    counts = np.log1p(rng.integers(0, 50, n)).astype(np.float32)
    counts[rng.random(n) < 0.5] = 0.0
    link_counts = links.matrix(rng.integers(0, n, 600), rng.integers(0, n, 600), n)
    corpus = retrieve.Corpus(queries, items, counts, content.matrix, link_counts)
    small = blend_lib.Blend(0.2, 0.7, 0.4, 0.1, cold_share=0.3, cold_content_weight=2.0)
    large = blend_lib.Blend(0.05, 0.0, 0.5, 0.0, links_share=0.2)
    blends = blend_lib.Blends(((5, small), (10, large)))
    rows = np.array([0, 3, 17, 40])
    got = retrieve.retriever(corpus, blends)(rows, (3, 5, 10))

    dense_tfidf = (content.matrix @ content.matrix.T).toarray()
    dense_links = np.log1p(link_counts.toarray())
    cos = queries @ items.T
    cos[np.arange(n), np.arange(n)] = -np.inf

    def order(score):
        ranked = np.argsort(-score[rows], axis=1, kind="stable")[:, :10]
        return np.where(np.isinf(np.take_along_axis(score[rows], ranked, 1)), -1, ranked)

    def expected(blend, k):
        lists = {
            "popular": order(cos + blend.popularity_prior * counts),
            "similar": order(
                cos + blend.content_weight * dense_tfidf - blend.popularity_penalty * counts
            ),
            "cold": order(
                np.where(counts > 0, -np.inf, cos + blend.cold_content_weight * dense_tfidf)
            ),
            "linked": order(
                np.where(dense_links > 0, cos + scores.LINKS_WEIGHT * dense_links, -np.inf)
            ),
        }
        return reference_merge(lists, blend.segments(k), k)

    # Each k is merged on its own, with the blend of its list size.
    for k, blend in ((3, small), (5, small), (10, large)):
        np.testing.assert_array_equal(got[k], expected(blend, k), err_msg=f"k={k}")
    assert not np.array_equal(got[5], got[10][:, :5])
    assert (counts[got[5][:, 2:4]] == 0).all()  # 2 popular slots, then 2 cold ones
    linked = got[10][:, :2]
    assert (link_counts[rows[:, None], np.maximum(linked, 0)].toarray()[linked >= 0] > 0).all()


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
    product = tfidf.product(got.matrix)
    np.testing.assert_allclose(
        product(np.array([0, 2]), 1, 4), (dense @ dense.T)[[0, 2], 1:4], rtol=1e-5, atol=1e-6
    )


def test_content_vectors_in_the_graph_match_numpy_for_any_unicode_value():
    content = tfidf.from_token_sets(
        ["maintainer", "tags"],
        [{"maintainer=Jörg", "tags=ä"}, {"maintainer=Jörg"}, {"maintainer=x", "tags=ä"}],
    )
    vectors = tfidf.ContentVectors(content)
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


def test_blend_json_round_trip_keeps_every_field():
    blend = blend_lib.Blend(0.1, 1.0, 0.4, 0.02, 0.2, 4.0, 0.2)
    assert blend_lib.Blend(**dataclasses.asdict(blend)) == blend
    assert (*blend_lib.NAMES, "fusion") == tuple(dataclasses.asdict(blend))
    weights = tuple(float(i) for i in range(len(scores.FEATURES)))
    fused = blend_lib.Blend(prior_share=0.6, cold_share=0.2, fusion=weights)
    written = blend_lib.to_json(fused)
    assert written["fusion"]["cos"] == 0.0 and written["fusion"]["loglinks*logn"] == 14.0
    assert blend_lib.Blend(**written) == fused
    assert blend_lib.Blends.from_json({"10": written}).for_k(3) == fused
    assert fused.rankings()["fused"] == scores.fused(weights) and "popular" not in fused.rankings()
    with pytest.raises(ValueError, match="no popularity_prior"):
        blend_lib.Blend(popularity_prior=0.1, fusion=weights)
    with pytest.raises(ValueError, match="unknown features"):
        blend_lib.Blend(fusion={"cos": 1.0, "hubness": 2.0})


def test_fusion_off_gives_the_prior_s_popular_slots(tmp_path):
    weights = tuple(1.0 for _ in scores.FEATURES)
    fused = blend_lib.Blend(prior_share=1.0, fusion=weights)
    blend_lib.save(str(tmp_path), {"blends": blend_lib.Blends.single(fused).to_json()})
    assert blend_lib.resolve(str(tmp_path)).for_k(10) == fused
    cosine = blend_lib.resolve(str(tmp_path), fusion="off", popularity_prior="0").for_k(10)
    assert cosine == blend_lib.Blend()
    with pytest.raises(ValueError, match="--fusion"):
        blend_lib.resolve(str(tmp_path), fusion="on")


def test_evaluation_s_als_term_is_the_factors_product_by_corpus_chunk():
    rng = np.random.default_rng(9)
    n = 10
    found = factors.Factors(
        rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)
    )
    corpus = retrieve.Corpus(
        np.eye(n, 4, dtype=np.float32), np.eye(n, 4, dtype=np.float32), np.zeros(n), als=found
    )
    als_only = scores.fused([1.0 if f == "als" else 0.0 for f in scores.FEATURES])
    score = retrieve.scorer(corpus, {"als": als_only})
    rows = np.array([2, 7])
    ((_, got),) = list(score(rows, 4, 10))
    want = found.users[rows] @ found.items[4:10].T
    want[1, 3] = -np.inf  # item 7 is the second query itself
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    np.testing.assert_allclose(found.pairs(rows, np.array([5, 9])), want[[0, 1], [1, 5]], 1e-5)


def test_a_fused_score_is_the_weighted_sum_of_its_features_in_numpy():
    rng = np.random.default_rng(7)
    cos = rng.uniform(-1, 1, size=(3, 5)).astype(np.float32)
    cos[1, 2] = -np.inf  # the query's own item stays excluded
    tf_idf = rng.random((3, 5)).astype(np.float32)
    logn = np.log1p(np.array([0, 3, 0, 9, 1], np.float32))
    links = np.log1p(rng.integers(0, 3, size=(3, 5)).astype(np.float32))
    paths = np.log1p(rng.integers(0, 4, size=(3, 5)).astype(np.float32))
    knn = np.log1p(rng.random((3, 5)).astype(np.float32) * 3)
    als = rng.normal(size=(3, 5)).astype(np.float32)
    weights = rng.normal(size=len(scores.FEATURES))
    c = np.where(np.isinf(cos), 0.0, cos)
    cold = (logn == 0).astype(np.float32)[None, :]
    n = logn[None, :]
    columns = {
        "cos": c,
        "tfidf": tf_idf,
        "logn": n + 0 * c,
        "cold": cold + 0 * c,
        "loglinks": links,
        "logn^2": n**2 + 0 * c,
        "cos*tfidf": c * tf_idf,
        "cos*logn": c * n,
        "tfidf*cold": tf_idf * cold,
        "cos*cold": c * cold,
        "tfidf*logn": tf_idf * n,
        "tfidf^2": tf_idf**2,
        "cos^2": c**2,
        "loglinks*cos": links * c,
        "loglinks*logn": links * n,
        "logpaths": paths,
        "logknn": knn,
        "logknn*cos": knn * c,
        "logknn*logn": knn * n,
        "logknn^2": knn**2,
        "als": als,
        "als*cos": als * c,
        "als*logn": als * n,
    }
    degree = np.log1p(np.array([[4.0], [0.0], [1.0]], np.float32))  # one per query
    for term in ("cos", "tfidf", "logn", "cold", "loglinks", "logknn", "als"):
        columns[f"logq*{term}"] = degree * columns[term]
    expected = sum(w * columns[f] for f, w in zip(scores.FEATURES, weights, strict=True))
    expected[1, 2] = -np.inf
    got = scores.score(
        scores.fused(weights),
        tf.constant(cos),
        tfidf=tf.constant(tf_idf),
        log_counts=tf.constant(logn),
        log_links=tf.constant(links),
        log_paths=tf.constant(paths),
        log_knn=tf.constant(knn),
        als=tf.constant(als),
        log_degree=tf.constant(degree),
    ).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    ranking = scores.fused(weights)
    # The query's degree is read from the links.
    only_degree = scores.fused([float(f == "logq*cos") for f in scores.FEATURES])
    assert only_degree.needs_degree and only_degree.needs_links and not only_degree.needs_als
    assert ranking.needs_content and ranking.needs_counts and ranking.needs_links
    assert ranking.needs_paths
    # The paths alone still need the links they are counted from.
    only_paths = scores.fused([1.0 if f == "logpaths" else 0.0 for f in scores.FEATURES])
    assert only_paths.needs_paths and only_paths.needs_links and not only_paths.needs_counts
    only_cos = scores.fused([1.0] + [0.0] * (len(scores.FEATURES) - 1))
    assert not (only_cos.needs_content or only_cos.needs_counts or only_cos.needs_links)
    assert not only_cos.needs_paths
    # So does the item-kNN's score.
    only_knn = scores.fused([1.0 if f == "logknn" else 0.0 for f in scores.FEATURES])
    assert only_knn.needs_knn and only_knn.needs_links and not only_knn.needs_paths
    assert ranking.needs_knn and not only_cos.needs_knn
    # The factorisation's score needs its factors, not the links (they ship on their own).
    only_als = scores.fused([1.0 if f == "als" else 0.0 for f in scores.FEATURES])
    assert only_als.needs_als and not only_als.needs_links and not only_cos.needs_als


def test_a_blend_describes_itself_in_one_short_line():
    blend = blend_lib.Blend(0.08, 2.0, 0.6, 0.05, cold_share=0.2, cold_content_weight=4.0)
    assert blend.describe() == (
        "60% popular (cos + 0.08 log count), 20% cold (cos + 4 tfidf), "
        "20% similar (cos + 2 tfidf - 0.05 log count)"
    )
    weights = tuple(1.0 for _ in scores.FEATURES)
    fused = blend_lib.Blend(prior_share=0.8, content_weight=1.0, links_share=0.2, fusion=weights)
    blends = blend_lib.Blends(((10, fused), (50, blend_lib.Blend())))
    assert blends.describe() == (
        f"lists of 10: 20% linked, 80% fused ({len(scores.FEATURES)} weights with two-step "
        "paths, item-kNN, ALS and the query's degree); lists of 50: 100% popular (cos)"
    )
    no_degree = tuple(0.0 if f in scores.DEGREE else 1.0 for f in scores.FEATURES)
    assert "with two-step paths, item-kNN and ALS)" in (
        blend_lib.Blend(prior_share=1.0, fusion=no_degree).describe()
    )
    no_als = tuple(0.0 if f in scores.ALS | scores.DEGREE else 1.0 for f in scores.FEATURES)
    assert "with two-step paths and item-kNN)" in (
        blend_lib.Blend(prior_share=1.0, fusion=no_als).describe()
    )
    no_knn = tuple(
        0.0 if f in scores.KNN | scores.ALS | scores.DEGREE else 1.0 for f in scores.FEATURES
    )
    assert "with two-step paths)" in blend_lib.Blend(prior_share=1.0, fusion=no_knn).describe()
    plain = tuple(
        0.0 if f in scores.KNN | scores.PATHS | scores.ALS | scores.DEGREE else 1.0
        for f in scores.FEATURES
    )
    assert "weights)" in blend_lib.Blend(prior_share=1.0, fusion=plain).describe()
