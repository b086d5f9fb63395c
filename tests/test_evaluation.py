"""Retrieval, metrics and reference recommenders against plain numpy references."""

import json

import numpy as np
import pytest

from ssl_retrieval import testing
from ssl_retrieval.evaluation import evaluator, metrics, references
from ssl_retrieval.ranking import topk
from ssl_retrieval.training import trainer


def reference_top_k(q_emb, items, query_indices, k, exclude=None):
    out = []
    for row, q in enumerate(query_indices):
        scores = items @ q_emb[q]
        banned = {q} | set(exclude[row] if exclude is not None else [])
        # Stable sort on -score: ties keep the lower index first.
        order = [i for i in np.argsort(-scores, kind="stable") if i not in banned]
        out.append(order[:k])
    return np.array(out)


def reference_metrics(retrieved, pairs, ks, member=None):
    relevant = {}
    for q, c in pairs:
        if member is None or member[c]:
            relevant.setdefault(q, set()).add(c)
    result = {}
    for k in ks:
        recalls, aps = [], []
        for q, rel in relevant.items():
            top = list(retrieved[q][:k])
            hits = [1 if i in rel else 0 for i in top]
            recalls.append(sum(hits) / len(rel))
            precision_sum = sum(hits[r] * sum(hits[: r + 1]) / (r + 1) for r in range(len(top)))
            aps.append(precision_sum / min(len(rel), k))
        kept = [(q, c) for q, c in pairs if member is None or member[c]]
        result[f"recall@{k}"] = float(np.mean(recalls))
        result[f"map@{k}"] = float(np.mean(aps))
        result[f"pair_recall@{k}"] = float(np.mean([c in retrieved[q][:k] for q, c in kept]))
    result["num_queries"] = len(relevant)
    return result


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_top_k_matches_numpy_with_chunks_ties_and_exclusions():
    rng = np.random.default_rng(0)
    items = unit(rng.normal(size=(203, 8)).astype(np.float32))
    items[50] = items[10]  # an exact tie: index 10 must come first
    items[120] = items[10]
    queries = unit(rng.normal(size=(203, 8)).astype(np.float32))
    queries[7] = items[10]
    query_indices = np.array([7, 10, 0, 202, 55, 120])
    exclude = [np.array([3, 4]), np.array([]), np.array([201]), np.array([10, 50]), [], [0]]
    scorer = topk.embedding_scorer(queries, items)
    for chunk in (16, 64, 1000):
        got, scores = topk.top_k(
            scorer, query_indices, 203, 12, exclude=exclude, query_batch=4, corpus_chunk=chunk
        )
        expected = reference_top_k(queries, items, query_indices, 12, exclude)
        np.testing.assert_array_equal(got, expected)
        assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert got[0][:3].tolist() == [10, 50, 120]  # ties by lower index
    assert 10 not in got[1] and 7 not in got[0]


def test_top_k_many_gives_each_ranking_what_its_own_pass_gives():
    rng = np.random.default_rng(3)
    items = unit(rng.normal(size=(150, 8)).astype(np.float32))
    queries = unit(rng.normal(size=(150, 8)).astype(np.float32))
    boost = rng.normal(size=150).astype(np.float32)
    query_indices = np.array([0, 5, 149, 77, 5])
    exclude = [np.array([1]), np.array([]), np.array([0, 2]), [], [6]]
    cosine = topk.embedding_scorer(queries, items)
    scorers = {
        "cos": cosine,
        "boosted": lambda r, a, b: np.asarray(cosine(r, a, b)) + boost[None, a:b],
        "negated": lambda r, a, b: -np.asarray(cosine(r, a, b)),
    }

    def many(rows, start, stop):
        return ((name, scorer(rows, start, stop)) for name, scorer in scorers.items())

    together = topk.top_k_many(
        many, query_indices, 150, 9, exclude=exclude, query_batch=2, corpus_chunk=40
    )
    assert set(together) == set(scorers)
    for name, scorer in scorers.items():
        alone = topk.top_k(
            scorer, query_indices, 150, 9, exclude=exclude, query_batch=2, corpus_chunk=40
        )
        np.testing.assert_array_equal(together[name][0], alone[0])
        np.testing.assert_allclose(together[name][1], alone[1])
    assert not (together["cos"][0] == together["negated"][0]).any()


def make_case(seed=1, n=80, queries=30, pairs_per_query=3):
    rng = np.random.default_rng(seed)
    retrieved = np.stack([rng.permutation(n)[:20] for _ in range(queries)])
    pairs = []
    for q in range(queries):
        for _ in range(int(rng.integers(1, pairs_per_query + 1))):
            # Half the time a retrieved item (so there are hits), else anything.
            c = int(retrieved[q, rng.integers(20)]) if rng.random() < 0.5 else int(rng.integers(n))
            pairs.append((q, c))
    pairs.append(pairs[0])  # a duplicate pair counts twice per pair, once per query
    return retrieved, pairs, rng


def test_metrics_match_numpy_reference_on_every_slice():
    retrieved, pairs, rng = make_case()
    member = rng.random(80) < 0.3
    q = np.array([p[0] for p in pairs])
    c = np.array([p[1] for p in pairs])
    got = metrics.compute(retrieved, q, c, [5, 10, 20], {"head": member, "tail": ~member})
    for name, mask in (("all", None), ("head", member), ("tail", ~member)):
        expected = reference_metrics(retrieved, pairs, [5, 10, 20], mask)
        for key, value in expected.items():
            assert got[name][key] == pytest.approx(value, abs=1e-12), (name, key)
    assert got["all"]["num_pairs"] == len(pairs)
    with pytest.raises(ValueError, match="k=30 exceeds the 20 retrieved"):
        metrics.compute(retrieved, q, c, [30])


def test_prepared_pairs_score_many_lists_like_the_numpy_reference():
    """Choosing a blend scores many lists against pairs prepared once (metrics.Relevance)."""
    retrieved, pairs, rng = make_case(seed=3)
    member = rng.random(200) < 0.4
    q = np.array([p[0] for p in pairs])
    c = np.array([p[1] for p in pairs])
    relevance = metrics.Relevance(len(retrieved), q, c, {"head": member})
    for _ in range(3):
        lists = rng.permutation(retrieved.ravel()).reshape(retrieved.shape)
        lists[rng.random(lists.shape) < 0.1] = -1  # padding
        lists[rng.random(lists.shape) < 0.1] = 150  # an item beyond every candidate
        got = relevance.compute(lists, [5, 20])
        for name, mask in (("all", None), ("head", member)):
            expected = reference_metrics(lists, pairs, [5, 20], mask)
            for key, value in expected.items():
                assert got[name][key] == pytest.approx(value, abs=1e-12), (name, key)


def test_map_on_a_hand_case():
    # Query 0: relevant {1, 2, 3}; retrieved 1 (hit), 9, 3 (hit): AP@3 = (1/1 + 2/3) / 3.
    retrieved = np.array([[1, 9, 3]])
    got = metrics.compute(retrieved, np.array([0, 0, 0]), np.array([1, 2, 3]), [3, 1])
    assert got["all"]["map@3"] == pytest.approx((1 + 2 / 3) / 3)
    assert got["all"]["recall@3"] == pytest.approx(2 / 3)
    assert got["all"]["map@1"] == pytest.approx(1.0)  # divided by min(|rel|, K) = 1


def test_reference_recommenders(data_dir):
    data = evaluator.load_eval_data(data_dir)
    counts = np.bincount(data.train_candidate, minlength=data.num_items)
    popular = evaluator.evaluate(data, references.top_popular(data), [10])
    queries = np.unique(data.eval_query)
    top, _ = topk.top_k(references.top_popular(data), queries, data.num_items, 10)
    most = np.argsort(-counts, kind="stable")[:11]
    for q, row in zip(queries, top, strict=True):
        assert row.tolist() == [i for i in most if i != q][:10]
    assert popular["tail"]["recall@10"] <= popular["head"]["recall@10"]
    knn = references.feature_knn(data, data_dir)
    scores = np.asarray(knn(np.array([0]), 0, data.num_items))[0]
    same_category = [i for i in range(data.num_items) if i % 12 // 2 == 0 and i != 0]
    assert (
        scores[same_category].mean()
        > scores[[i for i in range(data.num_items) if i % 12 // 2 == 3]].mean()
    )
    co = evaluator.evaluate(data, references.cooccurrence(data), [10, 50])
    assert co["all"]["recall@10"] > popular["all"]["recall@10"]


@pytest.mark.slow
def test_evaluate_cli_on_a_trained_model_matches_the_library(data_dir, tmp_path):
    model_dir = str(tmp_path / "m")
    trainer.run(testing.tiny_train_config(data_dir, model_dir, train_steps=60, method="cfm"))
    out = testing.run_command(
        "ssl_retrieval.evaluate",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--ks=5,20",
        "--exclude_train_positives",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "recall@5" in out.stdout and "cold" in out.stdout
    written = json.load(open(f"{model_dir}/metrics.json"))
    assert written["exclude_train_positives"] is True
    data = evaluator.load_eval_data(data_dir)
    expected = evaluator.evaluate_lists(
        data, evaluator.model_retriever(model_dir, data_dir), [5, 20], exclude_train_positives=True
    )
    for name in ("all", "head", "tail", "cold"):
        assert written["metrics"][name]["recall@20"] == pytest.approx(expected[name]["recall@20"])
    popular = evaluator.evaluate(data, references.top_popular(data), [20])
    assert written["metrics"]["all"]["recall@20"] > popular["all"]["recall@20"]


def test_evaluate_cli_errors(data_dir, tmp_path):
    out = testing.run_command("ssl_retrieval.evaluate", f"--data_dir={data_dir}", timeout=120)
    assert out.returncode == 1 and "--model_dir is required" in out.stderr
    assert "Traceback" not in out.stderr


def test_slice_table_lists_each_recommender_per_slice():
    metrics = {
        s: {"recall@50": v}
        for s, v in zip(("all", "head", "tail", "cold"), (0.5, 0.6, 0.25, 0.125), strict=True)
    }
    table = evaluator.slice_table({"model": metrics, "feature_knn": metrics})
    lines = table.splitlines()
    assert lines[0].split()[-4:] == ["all", "head", "tail", "cold"]
    assert lines[1].split() == ["model", "0.500", "0.600", "0.250", "0.125"]
    assert lines[2].startswith("feature_knn")


def test_evaluate_cli_max_queries_evaluates_a_fixed_sample(data_dir, tmp_path):
    data = evaluator.load_eval_data(data_dir)
    total = len(np.unique(data.eval_query))
    sample = evaluator.sample_queries(data, 5, seed=0)
    assert len(np.unique(sample.eval_query)) == 5 < total

    def run(max_queries, output):
        out = testing.run_command(
            "ssl_retrieval.evaluate",
            f"--data_dir={data_dir}",
            "--recommender=top_popular",
            f"--max_queries={max_queries}",
            f"--output={output}",
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout, json.load(open(output))

    stdout, written = run(5, tmp_path / "sample.json")
    assert f"a fixed random sample of 5 of {total} eval queries (seed 0)" in stdout
    assert written["queries"] == {"evaluated": 5, "of": total, "sampled": True, "seed": 0}
    expected = evaluator.evaluate(sample, references.top_popular(data), [10, 50])
    assert written["metrics"]["all"]["num_queries"] == expected["all"]["num_queries"] <= 5
    assert written["metrics"]["all"]["recall@50"] == pytest.approx(expected["all"]["recall@50"])
    assert run(5, tmp_path / "again.json")[1]["metrics"] == written["metrics"]  # same sample
    stdout, written = run(total + 10, tmp_path / "all.json")
    assert f"all {total} eval queries" in stdout
    assert written["queries"] == {"evaluated": total, "of": total, "sampled": False, "seed": None}


def test_embedding_scorer_shares_or_copies_the_matrix_and_scores_like_numpy():
    rng = np.random.default_rng(4)
    items = unit(rng.normal(size=(70, 16)).astype(np.float32))
    queries = unit(rng.normal(size=(70, 16)).astype(np.float32))
    rows = np.array([0, 9, 69, 9])
    # A float64 copy, a view with an odd offset (not 64-byte aligned) and the array itself.
    padded = np.concatenate([np.zeros((1, 16), np.float32), queries]).ravel()[16:].reshape(70, 16)
    for q in (queries, queries.astype(np.float64), padded):
        scores = np.asarray(topk.embedding_scorer(q, items)(rows, 5, 61))
        np.testing.assert_allclose(scores, queries[rows] @ items[5:61].T, rtol=1e-5, atol=1e-6)
    shared = np.asarray(topk.embedding_scorer(items, items)(rows, 0, 70))
    np.testing.assert_allclose(shared, items[rows] @ items.T, rtol=1e-5, atol=1e-6)
    # Chunks at every offset of a 3-wide matrix (slices not 64-byte aligned) still score.
    narrow = unit(rng.normal(size=(40, 3)).astype(np.float32))
    scorer = topk.embedding_scorer(narrow, narrow)
    for start in range(0, 40, 7):
        got = np.asarray(scorer(rows[:2], start, min(40, start + 7)))
        np.testing.assert_allclose(got, narrow[rows[:2]] @ narrow[start : start + 7].T, atol=1e-6)


def test_cooccurrence_scores_match_numpy_chunk_by_chunk(data_dir):
    data = evaluator.load_eval_data(data_dir)
    n = data.num_items
    links = np.zeros((n, n))
    links[data.train_query, data.train_candidate] = 1.0
    co = links.T @ links
    np.fill_diagonal(co, 0.0)
    counts = np.bincount(data.train_candidate, minlength=n)
    tie_break = 1e-6 * counts / counts.max()
    scorer = references.cooccurrence(data)
    # Two query batches, each scored chunk by chunk (the scorer keeps each batch's rows).
    for rows in (np.unique(data.eval_query)[:9], np.unique(data.train_query)[:5]):
        expected = np.log1p(links[rows] @ co + co[rows]) + tie_break
        assert (expected > tie_break).any()  # some co-occurrence to score
        for start in range(0, n, 17):
            stop = min(n, start + 17)
            got = scorer(rows, start, stop)
            np.testing.assert_allclose(got, expected[:, start:stop], rtol=1e-6, atol=1e-7)


def test_load_eval_data_gives_the_corpus_index_of_each_pair(data_dir):
    from ssl_retrieval import data as data_lib
    from ssl_retrieval.data_dir import DataDir

    data = evaluator.load_eval_data(data_dir)
    schema = DataDir.of(data_dir).schema
    index = {item_id: i for i, item_id in enumerate(data.item_ids)}
    id_name = schema.id_feature.name
    for split, (queries, candidates) in (
        ("eval", (data.eval_query, data.eval_candidate)),
        ("train", (data.train_query, data.train_candidate)),
    ):
        expected = ([], [])
        for batch in data_lib.pairs_dataset(data_dir, split, 50, schema):
            for side, out in (("query", expected[0]), ("candidate", expected[1])):
                values = batch[side][id_name]
                values = values.flat_values if hasattr(values, "flat_values") else values
                out += [index[v.decode()] for v in np.asarray(values).ravel()]
        assert len(expected[0]) > 10
        np.testing.assert_array_equal(queries, expected[0])
        np.testing.assert_array_equal(candidates, expected[1])


def test_run_evaluates_a_made_scorer_and_writes_its_record_beside_the_metrics(data_dir, tmp_path):
    """How evaluate runs a peer (peers.make): run() asks for the scorer once the data is read."""
    seen = []

    def make_scorer(data, source):
        seen.append((data.num_items, source.path))
        return references.top_popular(data), {"peer": {"name": "toy", "params": {"k": 1}}}

    output = str(tmp_path / "made.json")
    out = evaluator.run(data_dir, "toy", ks=(10,), output=output, make_scorer=make_scorer)
    written = json.load(open(output))
    assert written["peer"] == {"name": "toy", "params": {"k": 1}} == out["peer"]
    assert written["recommender"] == "toy" and seen == [(240, data_dir)]
    data = evaluator.load_eval_data(data_dir)
    expected = evaluator.evaluate(data, references.top_popular(data), [10])
    for name, by_slice in expected.items():
        assert written["metrics"][name] == pytest.approx(by_slice)
