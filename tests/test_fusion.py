"""The fused ranking (ranking/fusion.py): its features, its fit, and how the blend's choice
scores it on queries it was not fit on."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from ssl_retrieval import testing
from ssl_retrieval.evaluation import blend_choice, evaluator
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking import factors, fusion, links, retrieve, scores, tfidf
from ssl_retrieval.ranking.config import BlendConfig


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def toy_corpus(n=12, seed=0):
    rng = np.random.default_rng(seed)
    content = sp.csr_matrix(unit(rng.random((n, 6)) * (rng.random((n, 6)) < 0.5) + 1e-3))
    counts = np.log1p(rng.integers(0, 5, n)).astype(np.float32)
    counts[:3] = 0.0
    return retrieve.Corpus(
        unit(rng.normal(size=(n, 4))),
        unit(rng.normal(size=(n, 4))),
        counts,
        content,
        links.matrix(rng.integers(0, n, 20), rng.integers(0, n, 20), n),
    )


def test_pair_features_are_the_terms_of_each_pair():
    corpus = toy_corpus()
    queries, items = np.array([0, 0, 5, 7]), np.array([3, 9, 1, 7])
    got = fusion.pair_features(corpus, queries, items)
    assert got.shape == (4, len(scores.FEATURES))
    column = dict(zip(scores.FEATURES, got.T, strict=True))
    # Without the paths (or the item-kNN) their columns are 0 and the others are the same.
    without = fusion.pair_features(corpus, queries, items, paths=False)
    knn_columns = [scores.FEATURES.index(f) for f in scores.KNN]
    optional = [scores.FEATURES.index("logpaths"), *knn_columns]
    assert not without[:, optional].any() and not got[:, knn_columns].any()
    np.testing.assert_array_equal(np.delete(without, optional, 1), np.delete(got, optional, 1))
    cos = np.sum(corpus.query_embeddings[queries] * corpus.item_embeddings[items], axis=1)
    tf_idf = np.asarray(corpus.content[queries].multiply(corpus.content[items]).sum(axis=1)).ravel()
    logn = corpus.log_counts[items]
    link = np.log1p(np.asarray(corpus.links[queries, items]).ravel())
    np.testing.assert_allclose(column["cos"], cos, rtol=1e-5)
    np.testing.assert_allclose(column["tfidf"], tf_idf, rtol=1e-5)
    np.testing.assert_allclose(column["cold"], logn == 0)
    np.testing.assert_allclose(column["loglinks*logn"], link * logn, rtol=1e-5)
    np.testing.assert_allclose(column["cos*tfidf"], cos * tf_idf, rtol=1e-5)
    linked = (corpus.links.toarray() > 0).astype(float)
    paths = np.array([linked[q] @ linked[:, c] for q, c in zip(queries, items, strict=True)])
    assert paths.max() >= 1
    np.testing.assert_allclose(column["logpaths"], np.log1p(paths), rtol=1e-5)
    # The item-kNN's score: the query's profile (itself and its links) times the similarity.
    corpus.knn = links.knn_similarity(corpus.links)
    got_knn = fusion.pair_features(corpus, queries, items, knn=True)
    with_knn = dict(zip(scores.FEATURES, got_knn.T, strict=True))
    profiles = np.eye(len(linked)) + corpus.links.toarray()
    knn = np.log1p(
        np.array(
            [profiles[q] @ corpus.knn.toarray()[:, c] for q, c in zip(queries, items, strict=True)]
        )
    )
    assert knn.max() > 0
    np.testing.assert_allclose(with_knn["logknn"], knn, rtol=1e-5)
    np.testing.assert_allclose(with_knn["logknn*logn"], knn * logn, rtol=1e-5)
    # The links' factorisation: U[q] . V[c], 0 unless asked for.
    assert not got[:, [scores.FEATURES.index(f) for f in scores.ALS]].any()
    rng = np.random.default_rng(4)
    users, items_ = rng.normal(size=(2, len(linked), 3)).astype(np.float32)
    corpus.als = factors.Factors(users, items_)
    with_als = dict(
        zip(scores.FEATURES, fusion.pair_features(corpus, queries, items, als=True).T, strict=True)
    )
    als = np.array([users[q] @ items_[c] for q, c in zip(queries, items, strict=True)])
    np.testing.assert_allclose(with_als["als"], als, rtol=1e-5)
    np.testing.assert_allclose(with_als["als*cos"], als * cos, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(with_als["als*logn"], als * logn, rtol=1e-5)
    # The query's degree (its distinct training neighbours) times each term, 0 unless asked for.
    degree_columns = [scores.FEATURES.index(f) for f in scores.DEGREE]
    assert not got[:, degree_columns].any()
    everything = fusion.pair_features(corpus, queries, items, True, True, True, degree=True)
    with_degree = dict(zip(scores.FEATURES, everything.T, strict=True))
    degree = np.log1p((corpus.links.toarray() > 0).sum(axis=1))[queries]
    assert len(set(degree)) > 1
    for name in scores.DEGREE:
        term = name.split("*")[1]
        np.testing.assert_allclose(with_degree[name], degree * with_degree[term], rtol=1e-5)
    np.testing.assert_allclose(with_degree["logq*als"], degree * als, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(
        np.delete(everything, degree_columns, 1),
        np.delete(
            fusion.pair_features(corpus, queries, items, True, True, True), degree_columns, 1
        ),
    )


def test_each_slice_s_positives_weigh_the_same():
    labels = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
    head = np.array([1, 1, 1, 1, 0, 0, 1, 0], bool)
    cold = np.array([0, 0, 0, 0, 0, 1, 0, 0], bool)
    weights = fusion.sample_weights(labels, head, cold)
    # 6 positives: 4 head, 1 tail, 1 cold; each slice's share is 2 of the 6.
    np.testing.assert_allclose(weights, [0.5, 0.5, 0.5, 0.5, 2.0, 2.0, 1.0, 1.0])


def _listwise_loss(w, features, labels, queries, weights):
    """The listwise fit's objective, query by query in plain numpy."""
    loss = 0.5 * w @ w
    for query in np.unique(queries):
        rows = queries == query
        s = features[rows] @ w
        log_normaliser = np.log(np.exp(s - s.max()).sum()) + s.max()
        loss += (weights[rows] * labels[rows] * (log_normaliser - s)).sum()
    return loss


def test_the_listwise_fit_minimises_each_query_s_softmax_loss():
    from scipy import optimize

    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 4))
    queries = rng.integers(0, 20, 300)
    labels = np.zeros(300, bool)
    for query in range(20):  # one positive per query, drawn by a known score
        rows = np.flatnonzero(queries == query)
        labels[
            rows[np.argmax(features[rows] @ [2.0, -1.0, 0.0, 0.5] + rng.gumbel(size=len(rows)))]
        ] = True
    weights = rng.uniform(0.5, 2.0, 300)
    found = fusion.fit_listwise(features, labels, queries, weights)
    args = (features, labels, queries, weights)
    reference = optimize.minimize(
        _listwise_loss,
        np.zeros(4),
        args=args,
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000},
    )
    np.testing.assert_allclose(found, reference.x, atol=1e-3)
    assert _listwise_loss(found, *args) <= reference.fun + 1e-6
    # What every candidate of a query shares (a constant column) cannot order them: weight 0.
    shared = np.column_stack([features, queries.astype(float)])
    with_shared = fusion.fit_listwise(shared, labels, queries, weights)
    np.testing.assert_allclose(with_shared[:4], found, atol=1e-4)
    assert abs(with_shared[4]) < 1e-4
    # Without a single positive nothing is fit.
    none = np.zeros(300, bool)
    np.testing.assert_array_equal(fusion.fit_listwise(features, none, queries, weights), 0.0)
    # The order of the rows does not matter.
    order = rng.permutation(300)
    np.testing.assert_allclose(
        fusion.fit_listwise(features[order], labels[order], queries[order], weights[order]),
        found,
        atol=1e-6,
    )


def test_folds_split_the_queries_evenly_and_alike_every_time():
    fold_of = fusion.folds(np.arange(11))
    assert sorted(np.bincount(fold_of)) == [5, 6]
    np.testing.assert_array_equal(fold_of, fusion.folds(np.arange(11)))


def test_the_fit_finds_the_term_relevance_follows(tmp_path):
    """Validation pairs planted where TF-IDF is high: the fit weighs TF-IDF up, and its ranking
    finds them better than the cosine does."""
    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.2)
    data = blend_choice.validation_sample(data_dir, 2000)
    rng = np.random.default_rng(3)
    corpus = evaluator.corpus_of(
        data_dir,
        data,
        unit(rng.normal(size=(data.num_items, 8))),
        unit(rng.normal(size=(data.num_items, 8))),
    )
    corpus.content = tfidf.build(data_dir).matrix
    corpus.links = evaluator.training_links(data)
    queries = np.unique(data.eval_query)
    similarity = (corpus.content @ corpus.content.T).toarray()
    np.fill_diagonal(similarity, -1)
    planted = np.argmax(similarity[queries], axis=1)
    data.eval_query, data.eval_candidate = queries, planted
    top = retrieve.top_lists(corpus, fusion.CANDIDATES, queries, 30)
    lists = np.concatenate([top[name][0] for name in fusion.CANDIDATES], axis=1)
    pairs = fusion.Pairs.of(corpus, data, lists, queries)
    weights = fusion.fit(pairs)
    assert dict(zip(scores.FEATURES, weights, strict=True))["tfidf"] > 0
    # The two-step paths are weighed only when asked for (--blend_two_hop).
    assert dict(zip(scores.FEATURES, weights, strict=True))["logpaths"] == 0
    with_paths = fusion.fit(pairs, two_hop=True)
    assert dict(zip(scores.FEATURES, with_paths, strict=True))["logpaths"] != 0
    ranked = retrieve.top_lists(
        corpus, {"fused": scores.fused(weights), "cos": scores.popular(0)}, queries, 10
    )
    hits = {
        n: np.mean([p in row for p, row in zip(planted, ranked[n][0], strict=True)]) for n in ranked
    }
    assert hits["fused"] > 0.5 > hits["cos"]


def test_each_fold_s_fit_takes_its_rows_of_pairs_computed_once(tmp_path):
    # The pairs are computed once per choice; a fold's fit from its rows must be the fit of
    # pairs computed from that fold's queries alone.
    data_dir, data, new_corpus = _choice_inputs(tmp_path)
    corpus = new_corpus()
    corpus.content = tfidf.build(data_dir).matrix
    corpus.links = evaluator.training_links(data)
    queries = np.unique(data.eval_query)
    top = retrieve.top_lists(corpus, fusion.CANDIDATES, queries, 20)
    lists = np.concatenate([top[name][0] for name in fusion.CANDIDATES], axis=1)
    fold_of = fusion.folds(queries)
    pairs = fusion.Pairs.of(corpus, data, lists, queries)
    for two_hop in (False, True):
        per_fold = fusion.fit_out_of_fold(pairs, queries, fold_of, two_hop)
        for f, weights in enumerate(per_fold):
            others = fold_of != f
            alone = fusion.Pairs.of(corpus, data, lists[others], queries[others], paths=two_hop)
            np.testing.assert_allclose(weights, fusion.fit(alone, two_hop), rtol=1e-6, atol=1e-9)
    without_paths = fusion.Pairs.of(corpus, data, lists, queries, paths=False)
    with pytest.raises(ValueError, match="paths=True"):
        fusion.fit(without_paths, two_hop=True)


def _choice_inputs(tmp_path):
    """A tiny data dir, its validation sample and a corpus of random unit embeddings."""
    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.2)
    data = blend_choice.validation_sample(data_dir, 2000)
    rng = np.random.default_rng(5)
    items = unit(rng.normal(size=(data.num_items, 8)))
    return data_dir, data, lambda: evaluator.corpus_of(data_dir, data, items, items)


def _only_the_first_fit(**changes) -> BlendConfig:
    """Lists of 10 by the mean over slices, one fused ranking (without the link graph's terms,
    the factorisation, the query's degree or head weights) unless `changes` add them."""
    plain = BlendConfig(
        blend_ks=(10,),
        blend_objective="slices",
        blend_fusion=True,
        blend_two_hop=False,
        blend_item_knn=False,
        blend_als=False,
        blend_query_degree=False,
        blend_als_factors=(factors.PARAMS["factors"],),
        blend_fusion_head_shares=(1.0,),
    )
    return dataclasses.replace(plain, **changes)


def test_the_choice_scores_the_fused_ranking_out_of_fold(tmp_path):
    data_dir, data, new_corpus = _choice_inputs(tmp_path)
    corpus = new_corpus()
    config = _only_the_first_fit()
    choice = blend_choice.choose(corpus, data, config, data_dir)
    weights = tuple(choice["fusion"]["weights"])
    assert choice["fusion"]["features"] == list(scores.FEATURES)
    grid = choice["choices"]["10"]["grid"]
    fused = [t for t in grid if t["fused"]]
    assert fused and len(fused) < len(grid)
    # Its trial with the whole list fused was scored by out-of-fold lists: each fold's queries
    # ranked with weights fit on the other fold.
    queries = np.unique(data.eval_query)
    fold_of = fusion.folds(queries)
    top = retrieve.top_lists(corpus, fusion.CANDIDATES, queries, fusion.FIT_DEPTH)
    candidates = np.concatenate([top[name][0] for name in fusion.CANDIDATES], axis=1)
    pairs = fusion.Pairs.of(corpus, data, candidates, queries, paths=False)
    per_fold = fusion.fit_out_of_fold(pairs, queries, fold_of)
    assert all(w != weights for w in per_fold)
    expected = np.full((len(queries), 10), -1)
    for f, w in enumerate(per_fold):
        lists = retrieve.top_lists(corpus, {"f": scores.fused(w)}, queries, 10)["f"][0]
        expected[fold_of == f] = lists[fold_of == f]
    whole = next(t for t in fused if t["prior_share"] == 1.0)
    assert whole["metrics"] == evaluator.list_scorer(data)(expected, (10,))
    chosen = blend_lib.Blends.from_json(choice["blends"]).for_k(10)
    assert (chosen.fusion == weights) if chosen.fusion else True


def test_link_terms_the_factorisation_and_the_query_degree_each_add_a_fused_ranking(tmp_path):
    """Each list size may take the second fused ranking (the link graph's terms), the third
    (the factorisation too) or the fourth (their products with the query's degree too)."""
    data_dir, data, new_corpus = _choice_inputs(tmp_path)
    plain = _only_the_first_fit(blend_ks=(10, 20))
    with_terms = dataclasses.replace(plain, blend_two_hop=True, blend_item_knn=True)
    before = blend_choice.choose(new_corpus(), data, plain, data_dir)
    middle = blend_choice.choose(new_corpus(), data, with_terms, data_dir)
    linked = [scores.FEATURES.index(f) for f in ("logpaths", "logknn", "logknn*cos")]
    assert middle["fusion"]["weights"] == before["fusion"]["weights"]  # the same first fit
    assert all(middle["fusion"]["weights"][i] == 0 for i in linked)
    assert all(middle["fusion"]["weights_link_terms"][i] != 0 for i in linked)
    for k in ("10", "20"):
        trials, plain_trials = middle["choices"][k]["grid"], before["choices"][k]["grid"]
        fused = [t for t in plain_trials if t["fused"]]
        # Every fused blend once more with the second fused ranking; the rest as before.
        assert len(trials) == len(plain_trials) + len(fused)
        assert sum(t["link_terms"] for t in trials) == len(fused)
        # The choice is the best trial of the larger grid, so never worse on validation.
        assert middle["choices"][k]["value"] >= before["choices"][k]["value"]

    corpus = new_corpus()
    both = dataclasses.replace(with_terms, blend_ks=(10,), blend_als=True, blend_query_degree=True)
    after = blend_choice.choose(corpus, data, both, data_dir)
    fit = after["fusion"]
    assert fit["als"] == {**factors.PARAMS, "objective_by_factors": {}}  # one size: no ranking
    # The factors were fit on the training links, and only the third and fourth rankings weigh
    # them; only the fourth weighs the query's degree (its products with every term).
    assert corpus.als.users.shape == (data.num_items, factors.PARAMS["factors"])
    als = [scores.FEATURES.index(f) for f in scores.ALS - scores.DEGREE]
    degree = [scores.FEATURES.index(f) for f in scores.DEGREE]
    assert all(fit["weights_als"][i] != 0 for i in als)
    assert not any(fit["weights_als"][i] for i in degree)
    assert all(fit["weights_query_degree"][i] != 0 for i in degree)
    # The factorisation's own top items joined the candidates, but the other two fits are the
    # ones chosen without it: the grid is the same grid and two more fused rankings.
    assert fit["weights"] == middle["fusion"]["weights"]
    assert fit["weights_link_terms"] == middle["fusion"]["weights_link_terms"]
    trials, plain_trials = after["choices"]["10"]["grid"], middle["choices"]["10"]["grid"]
    fused = [t for t in plain_trials if t["link_terms"]]
    # Every blend with the second fused ranking once more with the third and the fourth.
    assert len(trials) == len(plain_trials) + 2 * len(fused)
    assert sum(t["als_terms"] for t in trials) == 2 * len(fused)
    assert sum(t["degree_terms"] for t in trials) == len(fused)
    assert [t for t in trials if not t["als_terms"]] == plain_trials
    assert after["choices"]["10"]["value"] >= middle["choices"]["10"]["value"]


def test_head_shares_fit_each_fused_ranking_once_more_with_the_head_weighed_up(tmp_path):
    data_dir, data, new_corpus = _choice_inputs(tmp_path)
    plain = _only_the_first_fit()
    before = blend_choice.choose(new_corpus(), data, plain, data_dir)
    corpus = new_corpus()
    shares = dataclasses.replace(plain, blend_fusion_head_shares=(1.0, 3.0))
    after = blend_choice.choose(corpus, data, shares, data_dir)
    # The plain fit is the same; the other is the fit with the head's positives weighing 3.
    assert after["fusion"]["weights"] == before["fusion"]["weights"]
    queries = np.unique(data.eval_query)
    top = retrieve.top_lists(corpus, fusion.CANDIDATES, queries, fusion.FIT_DEPTH)
    candidates = np.concatenate([top[name][0] for name in fusion.CANDIDATES], axis=1)
    pairs = fusion.Pairs.of(corpus, data, candidates, queries, paths=False)
    heavy = after["fusion"]["head_shares"]["3"]["weights"]
    np.testing.assert_allclose(heavy, fusion.fit(pairs, shares=(3.0, 1.0, 1.0)), rtol=1e-6)
    assert heavy != after["fusion"]["weights"]
    # Every fused blend of the grid once more with the other fit.
    trials, plain_trials = after["choices"]["10"]["grid"], before["choices"]["10"]["grid"]
    fused = sum(t["fused"] for t in plain_trials)
    assert len(trials) == len(plain_trials) + fused
    assert sum(t["fused"] for t in trials) == 2 * fused
    with pytest.raises(ValueError, match="blend_fusion_head_shares"):
        dataclasses.replace(plain, blend_fusion_head_shares=(0.0,)).validate()


def test_the_listwise_loss_fits_every_fused_ranking_by_each_query_s_softmax(tmp_path):
    data_dir, data, new_corpus = _choice_inputs(tmp_path)
    plain = _only_the_first_fit()
    corpus = new_corpus()
    listwise = dataclasses.replace(plain, blend_fusion_loss="listwise")
    chosen = blend_choice.choose(corpus, data, listwise, data_dir)
    queries = np.unique(data.eval_query)
    top = retrieve.top_lists(corpus, fusion.CANDIDATES, queries, fusion.FIT_DEPTH)
    candidates = np.concatenate([top[name][0] for name in fusion.CANDIDATES], axis=1)
    pairs = fusion.Pairs.of(corpus, data, candidates, queries, paths=False)
    np.testing.assert_allclose(
        chosen["fusion"]["weights"], fusion.fit(pairs, loss="listwise"), rtol=1e-6
    )
    assert chosen["fusion"]["weights"] != list(fusion.fit(pairs))
    assert chosen["options"]["blend_fusion_loss"] == "listwise"
    with pytest.raises(ValueError, match="blend_fusion_loss"):
        dataclasses.replace(plain, blend_fusion_loss="pairwise").validate()
    with pytest.raises(ValueError, match="unknown fusion loss"):
        fusion.fit(pairs, loss="pairwise")


def test_a_blend_chosen_before_an_option_existed_is_current_at_its_neutral_value(tmp_path):
    """blend.json written before --blend_two_hop and --blend_item_knn: the same options with both
    off (the values that choose as before), stale under the defaults that try them."""
    before = BlendConfig(blend_two_hop=False, blend_item_knn=False)
    without = before.options()
    del without["blend_two_hop"], without["blend_item_knn"]
    blend_lib.save(str(tmp_path), {"blends": {}, "options": without})
    assert not blend_choice.is_stale(str(tmp_path), before)
    assert blend_choice.is_stale(str(tmp_path), BlendConfig())
    assert blend_choice.is_stale(str(tmp_path), BlendConfig(blend_two_hop=False))
    assert blend_choice.is_stale(str(tmp_path), dataclasses.replace(before, blend_ks=(10,)))


def test_the_factorisation_keeps_the_size_whose_own_ranking_is_best_on_validation(tmp_path):
    data_dir, data, new_corpus = _choice_inputs(tmp_path)
    corpus = new_corpus()
    sizes = (2, 16)
    config = _only_the_first_fit(blend_ks=(5, 10), blend_als=True, blend_als_factors=sizes)
    fit = blend_choice.choose(corpus, data, config, data_dir)["fusion"]["als"]
    # Each size's value: its factorisation's own lists of the validation queries, scored as
    # the blend's objective scores a list (the mean over slices), averaged over the list sizes.
    queries = np.unique(data.eval_query)
    score = evaluator.list_scorer(data)
    expected = {}
    for size in sizes:
        found = factors.fit(corpus.links, **{**factors.PARAMS, "factors": size})
        ranked = dataclasses.replace(corpus, als=found)
        lists = retrieve.top_lists(ranked, {"als": fusion.ALS_CANDIDATE}, queries, 10)["als"][0]
        by_k = []
        for k in (5, 10):
            metrics = score(lists[:, :k], (k,))
            by_k.append(np.nanmean([metrics[s][f"recall@{k}"] for s in blend_choice.SLICES]))
        expected[str(size)] = float(np.mean(by_k))
    assert fit["objective_by_factors"] == pytest.approx(expected)
    assert len(set(expected.values())) == 2  # the sizes rank differently: the choice matters
    best = max(expected, key=expected.get)
    assert fit["factors"] == int(best) and corpus.als.users.shape[1] == int(best)
    assert {k: fit[k] for k in ("alpha", "regularization", "iterations")} == {
        k: factors.PARAMS[k] for k in ("alpha", "regularization", "iterations")
    }
    with pytest.raises(ValueError, match="blend_als_factors"):
        dataclasses.replace(config, blend_als_factors=(0, 16)).validate()
