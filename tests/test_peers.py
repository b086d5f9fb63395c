"""Peers (established libraries as references) against hand-checked toys and numpy references."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from ssl_retrieval import testing
from ssl_retrieval.evaluation import evaluator, peers
from ssl_retrieval.ranking import tfidf, topk


def toy(train_pairs, n):
    """EvalData of n items whose training pairs are `train_pairs` (no eval pairs needed)."""
    q, c = (np.array(side, np.int64) for side in zip(*train_pairs, strict=True))
    return evaluator.EvalData(
        item_ids=np.array([f"i{i}" for i in range(n)], dtype=object),
        eval_query=np.zeros(0, np.int64),
        eval_candidate=np.zeros(0, np.int64),
        train_query=q,
        train_candidate=c,
        head=np.zeros(n, bool),
        cold=np.zeros(n, bool),
    )


def links_by_hand(data, both_ways):
    r = np.zeros((data.num_items, data.num_items))
    for q, c in zip(data.train_query, data.train_candidate, strict=True):
        r[q, c] += 1
        if both_ways:
            r[c, q] += 1
    return r


def chunked(scorer, rows, n, chunk=7):
    return np.concatenate(
        [np.asarray(scorer(rows, a, min(n, a + chunk))) for a in range(0, n, chunk)], axis=1
    )


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    """A tiny data dir with a validation split."""
    path = str(tmp_path_factory.mktemp("peers") / "data")
    return testing.make_data_dir(path, validation_fraction=0.2)


@pytest.fixture(scope="module")
def sparse_dir(tmp_path_factory):
    """A tiny data dir where many items have no training link: 300 pairs over 240 items."""
    return testing.make_data_dir(str(tmp_path_factory.mktemp("sparse") / "data"), num_pairs=300)


def test_links_ranks_own_links_either_way_by_count_then_popularity():
    # 0 -> 1 twice, 2 -> 0, 3 -> 4, 1 -> 2; item 5 has no link. Popularity (as a candidate):
    # 1: 2, then 0, 2, 4: 1 each, then 3 and 5: 0.
    data = toy([(0, 1), (0, 1), (2, 0), (3, 4), (1, 2)], 6)
    lists, _ = topk.top_k(peers.links_scorer(data), np.array([0, 3, 4, 5, 2]), 6, 5)
    assert lists.tolist() == [
        [1, 2, 4, 3, 5],  # 1 by two links, 2 by one (its link to 0), then popularity
        [4, 1, 0, 2, 5],  # its one link, then popularity, ties to the lower index
        [3, 1, 0, 2, 5],  # 3 links to it: the reverse direction counts
        [1, 0, 2, 4, 3],  # no link: popularity
        [1, 0, 4, 3, 5],  # 2 -> 0 and 1 -> 2, one each: the more popular first
    ]


def test_link_matrix_counts_pairs_one_way_or_both():
    data = toy([(0, 1), (0, 1), (2, 0), (3, 4), (1, 2)], 6)
    for both_ways in (False, True):
        got = peers.link_matrix(data, both_ways).toarray()
        np.testing.assert_array_equal(got, links_by_hand(data, both_ways))


def test_tfidf_prior_is_the_tfidf_cosine_plus_beta_log_counts(data_dir):
    data = evaluator.load_eval_data(data_dir)
    scorer = peers.fit("tfidf_prior", data, {"beta": 0.3}, peers.Context(data_dir))
    rows = np.array([0, 5, 17])
    x = tfidf.build(data_dir).matrix.toarray()
    counts = np.bincount(data.train_candidate, minlength=data.num_items)
    popularity = counts / counts.max()
    expected = x[rows] @ x.T + 0.3 * np.log1p(counts) + 1e-6 * popularity
    got = chunked(scorer, rows, data.num_items)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # A larger beta ranks popular items higher: the top item of a row moves to the most popular.
    loud = peers.fit("tfidf_prior", data, {"beta": 100.0}, peers.Context(data_dir))
    assert np.argmax(chunked(loud, rows[:1], data.num_items)) == np.argmax(counts)


def test_als_scores_are_the_factor_products_of_the_fitted_model(sparse_dir):
    from implicit.cpu.als import AlternatingLeastSquares

    data = evaluator.load_eval_data(sparse_dir)
    n = data.num_items
    params = {"factors": 8, "regularization": 0.05, "alpha": 2.0, "iterations": 5}
    for both_ways in (False, True):
        context = peers.Context(sparse_dir, seed=3, num_threads=1)
        scorer = peers.fit("als", data, {**params, "both_ways": both_ways}, context)
        links = links_by_hand(data, both_ways)
        model = AlternatingLeastSquares(**params, random_state=3, num_threads=1)
        model.fit(sp.csr_matrix(links, dtype=np.float32), show_progress=False)
        expected = model.user_factors @ model.item_factors.T
        empty = links.sum(axis=1) == 0
        counts = np.bincount(data.train_candidate, minlength=n)
        expected[empty] = counts / counts.max()  # no links: popularity
        rows = np.concatenate([np.flatnonzero(empty)[:3], np.flatnonzero(~empty)[:6]])
        assert empty[rows].any()  # some queries fall back
        np.testing.assert_allclose(chunked(scorer, rows, n), expected[rows], rtol=1e-5, atol=1e-6)
        # What the library's own recommend ranks first, with the same scores.
        q = int(np.flatnonzero(~empty)[0])
        ids, scores = model.recommend(
            q, sp.csr_matrix(links[q : q + 1]), N=10, filter_already_liked_items=False
        )
        np.testing.assert_allclose(chunked(scorer, np.array([q]), n)[0, ids], scores, rtol=1e-5)


def test_itemknn_scores_are_the_profile_times_the_fitted_similarity(data_dir):
    from implicit.nearest_neighbours import BM25Recommender

    data = evaluator.load_eval_data(data_dir)
    n = data.num_items
    counts = np.bincount(data.train_candidate, minlength=n)
    for both_ways in (False, True):
        context = peers.Context(data_dir, num_threads=1)
        scorer = peers.fit("itemknn", data, {"K": 15, "both_ways": both_ways}, context)
        links = sp.csr_matrix(links_by_hand(data, both_ways), dtype=np.float32)
        model = BM25Recommender(K=15, num_threads=1)
        model.fit(links, show_progress=False)
        similarity = model.similarity.toarray()
        profiles = np.eye(n) + links.toarray()  # the query item and its links
        expected = profiles @ similarity
        tie_break = 1e-6 * model.similarity.data.min() * counts / counts.max()
        rows = np.arange(0, n, 9)
        got = chunked(scorer, rows, n)
        np.testing.assert_allclose(got, expected[rows] + tie_break, rtol=1e-5, atol=1e-9)
        # The library's recommend for that profile (own likes kept) ranks the same scores.
        q = int(rows[3])
        ids, scores = model.recommend(
            q, sp.csr_matrix(profiles[q : q + 1]), N=10, filter_already_liked_items=False
        )
        np.testing.assert_allclose(got[3, ids], scores, rtol=1e-5)
        # Items no profile item neighbours are ranked by popularity.
        zero = np.flatnonzero(expected[rows[3]] == 0)
        order = zero[np.argsort(-got[3, zero], kind="stable")]
        assert (np.diff(counts[order]) <= 0).all()


def lightfm_features_by_hand(data_dir, n):
    matrix = tfidf.build(data_dir).matrix.toarray()
    features = np.concatenate([np.eye(n), (matrix > 0).astype(float)], axis=1)
    return features / features.sum(axis=1, keepdims=True)


def test_lightfm_chunked_scores_equal_predict_on_all_pairs(data_dir):
    from lightfm import LightFM

    data = evaluator.load_eval_data(data_dir)
    n = data.num_items
    features = sp.csr_matrix(lightfm_features_by_hand(data_dir, n), dtype=np.float32)
    np.testing.assert_allclose(peers.lightfm_features(data_dir, n).toarray(), features.toarray())
    params = {"factors": 6, "learning_rate": 0.05, "regularization": 1e-5}
    context = peers.Context(data_dir, seed=7, num_threads=1)
    # Epochs 2 and 5 of one run, as the tuning gets them.
    points = [{**peers.DEFAULTS["lightfm"], **params, "epochs": e} for e in (2, 5)]
    scorers = dict((p["epochs"], s) for p, s in peers.fits("lightfm", data, points, context))
    interactions = sp.coo_matrix(links_by_hand(data, both_ways=False), dtype=np.float32)
    users, items = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    for epochs in (2, 5):
        model = LightFM(
            no_components=6,
            loss="warp",
            learning_rate=0.05,
            item_alpha=1e-5,
            user_alpha=1e-5,
            random_state=7,
        )
        model.fit(interactions, user_features=features, item_features=features, epochs=epochs)
        expected = model.predict(
            users.ravel(), items.ravel(), item_features=features, user_features=features
        ).reshape(n, n)
        rows = np.arange(n)
        got = chunked(scorers[epochs], rows, n, chunk=50)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(chunked(scorers[2], rows, n, 50), got)  # epochs change the model


def remove_split(data_dir, split):
    for path in glob.glob(os.path.join(data_dir, f"{split}-*.tfrecord")):
        os.rename(path, path + ".hidden")


def restore_split(data_dir, split):
    for path in glob.glob(os.path.join(data_dir, f"{split}-*.tfrecord.hidden")):
        os.rename(path, path[: -len(".hidden")])


def test_tuning_picks_the_best_validation_point_and_never_reads_eval(tuned_dir, monkeypatch):
    from ssl_retrieval.data_dir import DataDir

    opened = []
    files = DataDir.files
    monkeypatch.setattr(
        DataDir, "files", lambda self, split: opened.append(split) or files(self, split)
    )
    grid = {"K": [1, 3, 40], "both_ways": [False, True]}
    options = peers.PeerOptions(peer_grid=json.dumps(grid), peer_tune_queries=30)
    remove_split(tuned_dir, "eval")
    try:
        params, scorer, record = peers.tune("itemknn", tuned_dir, options)
    finally:
        restore_split(tuned_dir, "eval")
    assert "eval" not in opened and "validation" in opened
    # Every point, fitted and evaluated again on the same 30 validation queries.
    validation = evaluator.sample_queries(
        evaluator.load_eval_data(tuned_dir, "validation"), 30, seed=0
    )
    assert record["queries"]["evaluated"] == 30 < record["queries"]["of"]
    values = []
    for point in record["points"]:
        again = peers.fit("itemknn", validation, point["params"], peers.Context(tuned_dir))
        metrics = evaluator.evaluate(validation, again, [10, 50])
        values.append((metrics["all"]["recall@10"] + metrics["all"]["recall@50"]) / 2)
        assert point["value"] == pytest.approx(values[-1])
    assert [p["params"]["K"] for p in record["points"]] == [1, 1, 3, 3, 40, 40]
    assert len(set(np.round(values, 6))) > 1  # the grid matters, so the choice does
    best = int(np.argmax(values))  # the first of equals
    assert params == record["points"][best]["params"]
    assert record["best_value"] == pytest.approx(max(values))
    chosen = evaluator.evaluate(validation, scorer, [10, 50])
    assert peers.objective(chosen, (10, 50)) == pytest.approx(max(values))


def test_lightfm_tuning_evaluates_each_epoch_of_one_run(tuned_dir):
    grid = {"factors": [4], "epochs": [1, 3]}
    options = peers.PeerOptions(peer_grid=json.dumps(grid), peer_threads=1, peer_tune_queries=20)
    params, _, record = peers.tune("lightfm", tuned_dir, options)
    assert [p["params"]["epochs"] for p in record["points"]] == [1, 3]
    validation = evaluator.sample_queries(
        evaluator.load_eval_data(tuned_dir, "validation"), 20, seed=0
    )
    for point in record["points"]:  # a fresh fit of that many epochs gives the same value
        fresh = peers.fit("lightfm", validation, point["params"], peers.Context(tuned_dir, 0, 1))
        metrics = evaluator.evaluate(validation, fresh, [10, 50])
        assert peers.objective(metrics, (10, 50)) == pytest.approx(point["value"])


def test_options_errors_name_the_flag():
    with pytest.raises(ValueError, match="--peer_params is not JSON"):
        peers.PeerOptions(peer_params="{factors: 3}")
    with pytest.raises(ValueError, match="--peer_grid must be a JSON object"):
        peers.PeerOptions(peer_grid="[1, 2]")
    with pytest.raises(ValueError, match=r"--peer_params: als has no parameter 'k'.*'factors'"):
        peers.PeerOptions(peer_params='{"k": 3}').params("als")
    with pytest.raises(ValueError, match="--peer_params: als's factors must be a int"):
        peers.PeerOptions(peer_params='{"factors": 2.5}').params("als")
    with pytest.raises(ValueError, match="--peer_params: itemknn's both_ways must be a bool"):
        peers.PeerOptions(peer_params='{"both_ways": 1}').params("itemknn")
    with pytest.raises(ValueError, match="--peer_grid: K must be a non-empty list"):
        peers.PeerOptions(peer_grid='{"K": 5}').grid("itemknn")
    with pytest.raises(ValueError, match="--peer_tune_ks must be positive"):
        peers.PeerOptions(peer_tune_ks=(0,))
    given = peers.PeerOptions(peer_params='{"factors": 32, "regularization": 1}').params("als")
    assert given == {**peers.DEFAULTS["als"], "factors": 32, "regularization": 1.0}
    assert len(peers.grid_points(peers.GRIDS["als"], "als")) == 24
    assert peers.grid_points({}, "links") == [{}]


def evaluate_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "ssl_retrieval.evaluate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_evaluate_cli_tunes_a_peer_and_records_its_choice(tuned_dir, tmp_path):
    output = tmp_path / "itemknn.json"
    grid = {"K": [2, 30], "both_ways": [False, True]}
    out = evaluate_cli(
        f"--data_dir={tuned_dir}",
        "--recommender=itemknn",
        f"--peer_grid={json.dumps(grid)}",
        f"--output={output}",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    written = json.load(open(output))
    peer = written["peer"]
    assert peer["tuned"] and peer["seed"] == 0 and peer["num_threads"] == 2
    tuning = peer["tuning"]
    assert tuning["split"] == "validation" and tuning["grid"] == grid
    values = [p["value"] for p in tuning["points"]]
    assert peer["params"] == tuning["points"][int(np.argmax(values))]["params"]
    assert f"itemknn: {json.dumps(peer['params'], sort_keys=True)} (tuned" in out.stdout
    # The metrics are those of the chosen parameters on the eval split.
    data = evaluator.load_eval_data(tuned_dir)
    chosen = peers.fit("itemknn", data, peer["params"], peers.Context(tuned_dir))
    expected = evaluator.evaluate(data, chosen, [10, 50])
    for name in ("all", "head", "tail", "cold"):
        assert written["metrics"][name] == pytest.approx(expected[name])


@pytest.mark.slow
def test_evaluate_cli_peer_params_skip_tuning_and_errors(tuned_dir, tmp_path):
    output = tmp_path / "als.json"
    remove_split(tuned_dir, "validation")
    try:
        out = evaluate_cli(
            f"--data_dir={tuned_dir}",
            "--recommender=als",
            '--peer_params={"factors": 8, "both_ways": true}',
            "--seed=4",
            f"--output={output}",
        )
        assert out.returncode == 0, out.stderr[-2000:]
        peer = json.load(open(output))["peer"]
        assert peer["params"] == {**peers.DEFAULTS["als"], "factors": 8, "both_ways": True}
        assert not peer["tuned"] and peer["tuning"] is None and peer["seed"] == 4
        # Tuning needs the validation split, and says what to do without it.
        out = evaluate_cli(f"--data_dir={tuned_dir}", "--recommender=links", f"--output={output}")
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "links is tuned on the validation split; give --peer_params" in out.stderr
    finally:
        restore_split(tuned_dir, "validation")
    out = evaluate_cli(
        f"--data_dir={tuned_dir}", "--recommender=top_popular", "--peer_params={}", "--output=x"
    )
    assert out.returncode == 1 and "--peer_params is for the peers" in out.stderr
    out = evaluate_cli(f"--data_dir={tuned_dir}", "--recommender=als", "--peer_params={'a'}")
    assert out.returncode == 1 and "error: --peer_params is not JSON" in out.stderr


@pytest.mark.slow
def test_experiments_runner_evaluates_a_peer_like_a_reference(tuned_dir, tmp_path):
    from ssl_retrieval.experimentation import configs, launch, runner

    config = configs.experiment(
        {
            "output_dir": str(tmp_path / "out"),
            "data_dirs": {"1.0": tuned_dir},
            "runs_dir": str(tmp_path / "runs"),
            "methods": {},
            "references": ["top_popular", "links"],
        }
    )
    records = runner._references(config, launch.run_subprocess)
    assert [r["recommender"] for r in records] == ["top_popular", "links"]
    assert records[1]["peer"]["name"] == "links" and records[1]["metrics"]["all"]["num_queries"]
