"""The links' factorisation (ranking/factors.py): what it learns, and how it is kept."""

import os

import numpy as np
import pytest

from ssl_retrieval.ranking import factors, links


def two_communities(n=20, seed=0):
    """Link counts among items 0-9 and among items 10-19, none between; item 19 has no links."""
    rng = np.random.default_rng(seed)
    pairs = [(a, b) for a in range(n) for b in range(n) if a < b and (a < 10) == (b < 10)]
    pairs = [p for p in pairs if 19 not in p and rng.random() < 0.6]
    query, candidate = np.array(pairs).T
    return links.matrix(query, candidate, n)


def test_the_factors_score_an_item_s_own_community_above_the_other():
    counts = two_communities()
    found = factors.fit(counts, factors=4, regularization=0.1, alpha=10.0, iterations=15)
    assert found.users.shape == found.items.shape == (20, 4)
    scores = found.users @ found.items.T
    same = np.array([[(a < 10) == (b < 10) for b in range(20)] for a in range(20)])
    linked = np.diff(counts.indptr) > 0
    for q in np.flatnonzero(linked):
        # The query's own community scores above the other, on average.
        assert scores[q, same[q] & linked].mean() > scores[q, ~same[q] & linked].mean() + 0.3, q
    # A query without links has no factors: its term is 0 (as for a query by features).
    assert not linked[19] and not found.users[19].any()
    np.testing.assert_allclose(
        found.pairs(np.array([0, 12]), np.array([3, 1])), scores[[0, 12], [3, 1]], rtol=1e-5
    )


def test_factors_are_kept_beside_the_blend_and_removed_with_it(tmp_path):
    model_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{factors.FILE}.*--blend_als"):
        factors.load(model_dir)
    rng = np.random.default_rng(1)
    found = factors.Factors(
        rng.normal(size=(5, 2)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    )
    factors.save(model_dir, found)
    back = factors.load(model_dir)
    np.testing.assert_array_equal(back.users, found.users)
    np.testing.assert_array_equal(back.items, found.items)
    assert sorted(p.name for p in tmp_path.iterdir()) == [factors.FILE]  # no temporary left
    # Readable as the model dir's other files are (the umask's mode, not a private temp file's).
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / factors.FILE).stat().st_mode & 0o777 == 0o666 & ~umask
    factors.remove(model_dir)
    factors.remove(model_dir)  # nothing to remove: no error
    assert not list(tmp_path.iterdir())
