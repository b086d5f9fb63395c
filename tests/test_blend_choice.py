"""Choosing the blend on validation (evaluation/blend_choice.py) and the `blend` command."""

import dataclasses
import json
import os

import numpy as np
import pytest

from ssl_retrieval import testing
from ssl_retrieval.evaluation import blend_choice, evaluator, references
from ssl_retrieval.ranking import blend as blend_lib
from ssl_retrieval.ranking import factors, retrieve, scores, tfidf
from ssl_retrieval.ranking.config import BlendConfig
from ssl_retrieval.training import trainer

SLICES = ("all", "head", "tail", "cold")


def metrics_of(values, k=50):
    return {s: {f"recall@{k}": v} for s, v in zip(SLICES, values, strict=True)}


def test_objective_meets_every_reference_before_the_mean():
    refs = {"a": metrics_of([0.5, 0.6, 0.1, 0.0]), "b": metrics_of([0.2, 0.1, 0.5, 0.6])}
    # Best reference per slice: 0.5, 0.6, 0.5, 0.6.
    meets = metrics_of([0.55, 0.6, 0.5, 0.6])
    higher_mean = metrics_of([0.9, 0.9, 0.6, 0.3])
    value = blend_choice.objective_value
    assert value(meets, refs) == (1.0, pytest.approx(0.5625))
    worst = value(higher_mean, refs)
    assert worst[0] == pytest.approx(0.5) and worst[1] == pytest.approx(0.675)
    assert value(meets, refs) > worst
    assert value(higher_mean, None) > value(meets, None)
    # A slice without queries (NaN) and a slice no reference gets right do not count.
    assert value(metrics_of([0.5, 0.6, 0.5, float("nan")]), refs)[0] == 1.0
    # With a margin, meeting the references is not enough: 5% better than each is.
    assert value(meets, refs, margin=0.05)[0] < 1.05
    better = metrics_of([v * 1.1 for v in (0.5, 0.6, 0.5, 0.65)])
    assert value(better, refs, margin=0.05)[0] == 1.05


def test_grid_gives_shares_that_fit_and_weights_only_where_they_matter():
    config = BlendConfig(
        blend_betas=(0.0, 0.1),
        blend_content_weights=(0.0, 1.0),
        blend_popularity_penalties=(0.0, 0.5),
        blend_prior_shares=(1.0, 0.5),
        blend_cold_shares=(0.0, 0.25, 0.75),
        blend_cold_content_weights=(2.0,),
        blend_links_shares=(0.0, 0.5),
    )
    grid = blend_choice.grid(config)
    assert len(set(grid)) == len(grid)
    # links 0: share 1 per beta (2); share 0.5 per beta, w, gamma, cold (0 or 0.25) (16).
    # links 0.5: share 0.5 fills the list (per beta: 2); share 1 does not fit.
    assert len(grid) == 2 + 16 + 2
    assert all(b.prior_share + b.cold_share + b.links_share <= 1 + 1e-9 for b in grid)
    assert all(b.content_weight == 0 for b in grid if not b.has_similar)


def test_choose_for_k_finds_the_best_blend_and_prefers_the_simpler_on_ties():
    k = 4
    top = {
        scores.popular(0.0): np.array([[0, 1, 2, 3]]),
        scores.popular(0.1): np.array([[4, 5, 6, 7]]),
        # similar(0, 0) is cos, the same ranking as popular(0): one list.
        scores.similar(1.0, 0.0): np.array([[8, 4, 12, 9]]),
        scores.similar(0.0, 0.5): np.array([[9, 12, 8, 10]]),
        scores.similar(1.0, 0.5): np.array([[12, 13, 4, 8]]),
        scores.cold(2.0): np.array([[13, 5, 12, -1]]),
        scores.linked(): np.array([[20, -1, -1, -1]]),
    }
    relevant = {4, 5, 12, 13}
    scored = []

    def score(lists, ks):
        scored.append(lists.tolist())
        hits = len(relevant & set(lists[0].tolist())) / len(relevant)
        return metrics_of([hits] * 4, k)

    config = BlendConfig(
        blend_betas=(0.0, 0.1),
        blend_content_weights=(0.0, 1.0),
        blend_popularity_penalties=(0.0, 0.5),
        blend_prior_shares=(1.0, 0.5, 0.4),  # 0.4 and 0.5 both give 2 slots of 4
        blend_cold_shares=(0.0, 0.25),
        blend_cold_content_weights=(2.0,),
        blend_links_shares=(0.0, 0.25),
    )
    assert scores.similar(0.0, 0.0) == scores.popular(0.0)
    blends = blend_choice.grid(config)
    choice = blend_choice.choose_for_k(blends, top, score, k, None, 0.0)
    # beta 0.1 with half the slots: 4, 5, then 12, 13 from (w 1, gamma 0.5): all 4 relevant.
    # The same four with a cold slot (13) or a linked one (20, not relevant, loses): the tie
    # goes to the blend without.
    assert choice["blend"] == blend_lib.to_json(blend_lib.Blend(0.1, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0))
    assert choice["metric"] == "recall@4" and len(choice["grid"]) == len(blends)
    assert len(scored) < len(blends)  # blends with the same slots at k are scored once
    # A relevant cold item that no other ranking finds changes the choice.
    relevant.discard(13)
    relevant.add(20)
    top[scores.cold(2.0)] = np.array([[20, -1, -1, -1]])
    found = blend_choice.choose_for_k(blends, top, score, k, None, 0.0)["blend"]
    assert (found["cold_share"], found["links_share"]) in ((0.25, 0.0), (0.0, 0.25))
    # 20 is both the cold and the linked ranking's first item: the simpler (no links) wins.
    assert found["cold_share"] == 0.25


def test_floor_objective_asks_every_slice_for_its_share_of_the_grids_best_first():
    value = blend_choice.objective_value
    floors = {"all": 0.2, "head": 0.4, "tail": 0.1, "cold": 0.1}
    # Every slice at or above its floor: the first term is 1, then the mean.
    meets = metrics_of([0.3, 0.5, 0.1, 0.2])
    assert value(meets, None, floors=floors) == (1.0, pytest.approx(np.mean([0.3, 0.5, 0.1, 0.2])))
    # A higher mean with the tail at a quarter of its floor: the worst ratio, 0.25, comes first.
    buys_the_head = metrics_of([0.5, 0.9, 0.025, 0.2])
    assert value(buys_the_head, None, floors=floors)[0] == pytest.approx(0.25)
    assert value(meets, None, floors=floors) > value(buys_the_head, None, floors=floors)
    assert value(buys_the_head, None) > value(meets, None)  # the mean alone prefers it
    # A slice without queries (NaN) or without a floor does not count.
    nan_tail = metrics_of([0.3, 0.5, float("nan"), 0.2])
    assert value(nan_tail, None, floors=floors)[0] == 1.0
    assert value(buys_the_head, None, floors={**floors, "tail": 0.0})[0] == 1.0
    found = blend_choice.slice_floors(
        [metrics_of([0.2, 0.8, 0.0, 0.1]), metrics_of([0.4, 0.6, 0.3, float("nan")])],
        "recall@50",
        0.5,
    )
    assert found == pytest.approx({"all": 0.2, "head": 0.4, "tail": 0.15, "cold": 0.05})
    with pytest.raises(ValueError, match="blend_floor"):
        BlendConfig(blend_floor=0.0).validate()


def test_choose_for_k_with_a_floor_gives_the_tail_a_slot_the_mean_would_not():
    k = 2
    top = {
        scores.popular(0.0): np.array([[0, 1, 2, 3]]),  # the head's items
        scores.cold(2.0): np.array([[7, 6, 5, 4]]),
    }
    head, tail = {0, 1}, {7, 8, 9, 10}  # one cold slot finds a quarter of the tail

    def score(lists, ks):
        found = set(lists[0].tolist())
        h, t = len(head & found) / len(head), len(tail & found) / len(tail)
        return {
            "all": {"recall@2": (h * 2 + t) / 3},
            "head": {"recall@2": h},
            "tail": {"recall@2": t},
        }

    config = BlendConfig(
        blend_betas=(0.0,),
        blend_content_weights=(0.0,),
        blend_popularity_penalties=(0.0,),
        blend_prior_shares=(1.0, 0.5),
        blend_cold_shares=(0.0, 0.5),
        blend_cold_content_weights=(2.0,),
        blend_links_shares=(0.0,),
    )
    blends = blend_choice.grid(config)
    by_mean = blend_choice.choose_for_k(blends, top, score, k, None, 0.0)
    assert by_mean["blend"]["cold_share"] == 0.0  # both slots to the head: tail 0
    assert by_mean["metrics"]["tail"]["recall@2"] == 0.0
    floored = blend_choice.choose_for_k(blends, top, score, k, None, 0.0, floor=0.5)
    assert floored["blend"]["cold_share"] == 0.5  # one slot each: tail 0.25, head 0.5
    assert floored["floors"] == pytest.approx({"all": 0.5 * 2 / 3, "head": 0.5, "tail": 0.125})
    assert floored["value"][0] == 1.0 and by_mean["value"] > floored["value"][1:]


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_choose_scores_each_blend_as_evaluation_lists_it(tmp_path):
    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.2)
    data = blend_choice.validation_sample(data_dir, 2000)
    rng = np.random.default_rng(5)
    queries = unit(rng.normal(size=(data.num_items, 8)))
    items = unit(rng.normal(size=(data.num_items, 8)))
    corpus = evaluator.corpus_of(data_dir, data, queries, items)
    config = BlendConfig(
        blend_ks=(10, 50),
        blend_links_shares=(0.0, 0.2),
        blend_objective="references",
        blend_fusion=False,  # its trials are scored out of fold: see test_fusion.py
    )
    choice = blend_choice.choose(corpus, data, config, data_dir)
    assert set(choice["blends"]) == {"10", "50"} and choice["options"] == config.options()
    # The references' metrics are those of evaluating each on its own (its own pass).
    for name in references.RECOMMENDERS:
        alone = evaluator.evaluate(data, references.make(name, data, data_dir), (10, 50))
        for k in (10, 50):
            assert (
                choice["references"][str(k)][name]["all"][f"recall@{k}"]
                == alone["all"][f"recall@{k}"]
            )
    # A grid point's metrics are those of the evaluator's own lists of that blend.
    full = retrieve.Corpus(
        queries,
        items,
        corpus.log_counts,
        tfidf.build(data_dir).matrix,
        evaluator.training_links(data),
    )
    for k in (10, 50):
        trials = choice["choices"][str(k)]["grid"]
        for trial in trials[:: max(1, len(trials) // 12)]:
            blend = blend_lib.Blend(**{n: trial[n] for n in blend_lib.NAMES})
            lists = retrieve.retriever(full, blend_lib.Blends.single(blend, k))
            got = evaluator.evaluate_lists(data, lists, (k,))
            assert got == trial["metrics"], (k, blend)


@pytest.mark.slow
def test_train_chooses_a_blend_per_list_size_and_the_command_chooses_again(tmp_path):
    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.2)
    model_dir = str(tmp_path / "model")
    config = testing.tiny_train_config(data_dir, model_dir, train_steps=20, validate_every=10)
    summary = trainer.run(config, BlendConfig(blend_ks=(10, 50)))
    chosen = json.load(open(f"{model_dir}/blend.json"))
    assert summary["blends"] == chosen["blends"] and set(chosen["blends"]) == {"10", "50"}
    assert blend_lib.load(model_dir) == blend_lib.Blends.from_json(chosen["blends"])
    # Training's end writes the links' factors beside blend.json when a blend weighs them.
    assert blend_lib.load(model_dir).uses_als == os.path.exists(f"{model_dir}/{factors.FILE}")
    # The same run with other blend options chooses again, without training.
    narrower = BlendConfig(blend_ks=(20,), blend_cold_shares=(0.0,), blend_objective="slices")
    again = trainer.run(config, narrower)
    assert again["already_finished"] and again["steps"] == summary["steps"]
    rechosen = json.load(open(f"{model_dir}/blend.json"))
    assert list(rechosen["blends"]) == ["20"] and rechosen["references"] is None
    assert all(t["cold_share"] == 0 for t in rechosen["choices"]["20"]["grid"])
    # The command gives what training's end gives for the same options.
    out = testing.run_command(
        "ssl_retrieval.blend",
        f"--model_dir={model_dir}",
        "--blend_ks=20",
        "--blend_cold_shares=0",
        "--blend_objective=slices",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    again = json.load(open(f"{model_dir}/blend.json"))
    assert again["blends"] == rechosen["blends"] and "lists of 20" in out.stdout
    # The factors are written beside blend.json when a chosen blend weighs them, by training's
    # end and by the command alike, and removed when the blend is chosen again without them.
    # The tiny model's own choice need not take the factorisation: a choice that does is forced.
    weights = {f: float(f in scores.ALS - scores.DEGREE) for f in scores.FEATURES}
    als_blend = blend_lib.to_json(blend_lib.Blend(prior_share=1.0, fusion=weights))
    factors_path = os.path.join(model_dir, factors.FILE)

    def choose_als(corpus, data, config, data_dir):
        corpus.als = factors.Factors(np.ones((3, 2), np.float32), np.ones((3, 2), np.float32))
        return {"blends": {"20": als_blend}, "options": config.options()}

    other_options = dataclasses.replace(narrower, blend_fusion_head_shares=(1.0,))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blend_choice, "choose", choose_als)
        assert trainer.run(config, other_options)["already_finished"]
    assert blend_lib.load(model_dir).uses_als
    np.testing.assert_array_equal(factors.load(model_dir).users, np.ones((3, 2)))
    blend_choice.run(model_dir, narrower)
    assert not blend_lib.load(model_dir).uses_als and not os.path.exists(factors_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blend_choice, "choose", choose_als)
        blend_choice.run(model_dir, other_options)
    assert blend_lib.load(model_dir).uses_als and os.path.exists(factors_path)
