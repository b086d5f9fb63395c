"""Augmentations for the SSL task: feature masking (CFM, RFM, ...), feature and value dropout.

Every draw is stateless: a layer has a `seed` and is called with the global training `step`, and
its randomness comes from `tf.random.stateless_*` with the seed pair [seed * 1000003 + salt,
step]. Masks therefore change every batch, are identical for the same (seed, step), and a
resumed run repeats exactly the augmentations it would have made.

Features are identified by their index in the schema order (k features).

Masked-set size: the paper picks the seed feature plus its top n = floor(k/2) correlated features
"so that the masked and retained set of features have roughly the same size". Read literally the
masked set then has floor(k/2) + 1 features; we take the intent and mask `mask_size` features in
total, default floor(k/2) (seed included). `--mask_size` changes it.

The cold-start view (`--ssl_id_view=cold_start`, a choice beyond the paper): the id is taken
out of the masking pattern; view A always keeps it, view B always drops it, and the pattern
masks the other features as usual (`FeatureMasker`, `cold_start_feature`).
"""

from __future__ import annotations

import numpy as np

from ssl_retrieval.compat import tf

MASKING_PATTERNS = ("cfm", "rfm", "rfm_no_compl", "fm", "none")
MI_NORMALIZATIONS = ("none", "min", "mean", "sqrt")


def correlation_matrix(mutual_info, entropy, normalization: str = "none") -> np.ndarray:
    """The [k, k] feature correlation CFM ranks by: mutual information, raw or normalised.

    Raw MI favours high-entropy features: the MI of an id feature with any feature equals that
    feature's entropy, the largest value it can take, so the id is every seed's top correlate and
    CFM's masks collapse onto a few sets. Normalising by the entropies compares features on the
    share of information they have in common:
      min:  I / min(H_i, H_j)        (1 when one feature determines the other)
      mean: 2 I / (H_i + H_j)        (symmetric uncertainty)
      sqrt: I / sqrt(H_i H_j)
    A zero entropy gives zero correlation.
    """
    if normalization not in MI_NORMALIZATIONS:
        raise ValueError(
            f"--mi_normalization must be one of {list(MI_NORMALIZATIONS)}, got {normalization!r}"
        )
    mi = np.asarray(mutual_info, np.float64)
    h = np.asarray(entropy, np.float64)
    if normalization == "none":
        return mi
    hi, hj = h[:, None], h[None, :]
    if normalization == "min":
        denominator = np.minimum(hi, hj)
    elif normalization == "mean":
        denominator = (hi + hj) / 2.0
    else:
        denominator = np.sqrt(hi * hj)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, mi / safe, 0.0)


def _stateless_seed(seed: int, salt: int, step) -> tf.Tensor:
    return tf.stack([tf.constant(seed * 1000003 + salt, tf.int64), tf.cast(step, tf.int64)], axis=0)


def _random_subset(num_features: int, size: int, seed) -> tf.Tensor:
    """A uniformly random subset of `size` of `num_features`, as a [k] bool mask."""
    scores = tf.random.stateless_uniform([num_features], seed=seed)
    chosen = tf.math.top_k(scores, k=size).indices
    return tf.scatter_nd(chosen[:, tf.newaxis], tf.ones([size], tf.bool), [num_features])


def _cfm_table(mi: np.ndarray, mask_size: int, unranked) -> tf.Tensor:
    """[k, k] bool: row f = the features CFM masks when f is the seed: f first, then the others
    by correlation with f (desc), `unranked` features last, ties by index; mask_size of them."""
    k = len(mi)
    unranked = set(unranked)
    rows = []
    for f in range(k):
        others = sorted(
            (j for j in range(k) if j != f), key=lambda j: (j in unranked, -mi[f, j], j)
        )
        masked = set([f, *others][:mask_size])
        rows.append([j in masked for j in range(k)])
    return tf.constant(rows, tf.bool)


def _insert(mask: tf.Tensor, index: int, value: bool) -> tf.Tensor:
    """[n] bool -> [n + 1] bool with `value` at `index`."""
    return tf.concat([mask[:index], tf.constant([value]), mask[index:]], axis=0)


@tf.keras.utils.register_keras_serializable(package="ssl_retrieval")
class FeatureMasker(tf.keras.layers.Layer):
    """Two feature masks per batch for the two SSL views (True = masked).

    Patterns:
      cfm:          a seed feature uniform over k, masked with its most MI-correlated features
                    (mask_size in total) in view A; view B masks the complement.
      rfm:          a uniformly random subset of mask_size features in A, the complement in B.
      rfm_no_compl: two independent random subsets of mask_size features.
      fm:           fixed sets: view A sees exactly `fixed_features`, view B the rest.
      none:         no masking.

    The cold-start view (`cold_start_feature`; the id, with `--ssl_id_view=cold_start`): view A
    always keeps that feature and view B always masks it, and the pattern masks the other k - 1
    features as above (CFM's seeds and correlates are among them). With the id as that feature,
    every item's embedding without its id (B) is pulled towards its embedding with it (A),
    including items whose id has no row of its own (`--id_min_count`), for which the two views
    differ only by the pattern's masks. With a complementary pattern (cfm, rfm) A keeps the id
    and k - 1 - mask_size other features, B the mask_size others: with the default mask_size,
    k // 2 = ceil((k - 1) / 2), each view keeps about half of the k features, the id counted
    (Debian, k = 8: the id and 3 features against 4).

    Args:
      num_features: k.
      pattern: one of MASKING_PATTERNS.
      mutual_info: [k, k] correlation matrix (cfm only; see `correlation_matrix`).
      mask_size: features the pattern masks in view A; default k // 2.
      fixed_features: feature indices view A keeps (fm only).
      seed: random seed.
      unranked_features: indices never chosen as another seed's correlate (cfm only), e.g. the
        id feature, whose raw MI with everything is maximal; they can still be seeds.
      cold_start_feature: optional index of a feature view A keeps and view B masks at every
        step, outside the pattern (not with fm).
    """

    def __init__(
        self,
        num_features: int,
        pattern: str,
        mutual_info=None,
        mask_size: int | None = None,
        fixed_features=None,
        seed: int = 0,
        unranked_features=None,
        cold_start_feature: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        k = int(num_features)
        self.num_features = k
        self.pattern = pattern
        self.seed = int(seed)
        self.unranked_features = sorted(int(j) for j in (unranked_features or []))
        self.cold_start_feature = None if cold_start_feature is None else int(cold_start_feature)
        self._check_pattern(k)
        # The features the pattern masks: all k, or all but the cold-start feature.
        self._patterned = [j for j in range(k) if j != self.cold_start_feature]
        n = len(self._patterned)
        self.mask_size = int(max(1, k // 2) if mask_size is None else mask_size)
        if pattern in ("cfm", "rfm", "rfm_no_compl") and not 1 <= self.mask_size <= n - 1:
            raise ValueError(
                f"mask_size must be in [1, {n - 1}] for {n} masked features, got {self.mask_size}"
            )
        self.mutual_info = None
        if pattern == "cfm":
            mi = self._check_mutual_info(mutual_info, k)
            self.mutual_info = mi.tolist()
            inner = np.ix_(self._patterned, self._patterned)
            unranked = [
                self._patterned.index(j) for j in self.unranked_features if j in self._patterned
            ]
            self._masked_by_seed = _cfm_table(mi[inner], self.mask_size, unranked)
        self.fixed_features = self._check_fixed(fixed_features, k) if pattern == "fm" else None

    def _check_pattern(self, k: int) -> None:
        if self.pattern not in MASKING_PATTERNS:
            raise ValueError(
                f"pattern must be one of {list(MASKING_PATTERNS)}, got {self.pattern!r}"
            )
        if self.cold_start_feature is None:
            if k < 2 and self.pattern != "none":
                raise ValueError(f"num_features must be >= 2 to mask, got {k}")
            return
        if self.pattern == "fm":
            raise ValueError("cold_start_feature does not apply to pattern 'fm'")
        if not 0 <= self.cold_start_feature < k:
            raise ValueError(
                f"cold_start_feature must be in [0, {k - 1}], got {self.cold_start_feature}"
            )
        if k < 3 and self.pattern != "none":
            raise ValueError(
                f"num_features must be >= 3 to mask besides the cold-start feature, got {k}"
            )

    @staticmethod
    def _check_mutual_info(mutual_info, k: int) -> np.ndarray:
        if mutual_info is None:
            raise ValueError("mutual_info is required for pattern 'cfm'")
        mi = np.asarray(mutual_info, dtype=np.float64)
        if mi.shape != (k, k):
            raise ValueError(f"mutual_info must be [{k}, {k}], got shape {list(mi.shape)}")
        return mi

    @staticmethod
    def _check_fixed(fixed_features, k: int) -> list[int]:
        fixed = sorted(set(fixed_features or []))
        if not fixed or fixed[0] < 0 or fixed[-1] >= k or len(fixed) == k:
            raise ValueError(
                f"fixed_features must be a non-empty proper subset of 0..{k - 1}, got "
                f"{fixed_features}"
            )
        return fixed

    def _pattern_masks(self, step):
        """The pattern's two masks over its n features ([n] bool each)."""
        n = len(self._patterned)
        if self.pattern == "none":
            none = tf.zeros([n], tf.bool)
            return none, none
        if self.pattern == "cfm":
            seed_feature = tf.random.stateless_uniform(
                [], seed=_stateless_seed(self.seed, 1, step), maxval=n, dtype=tf.int32
            )
            mask_a = tf.gather(self._masked_by_seed, seed_feature)
            return mask_a, ~mask_a
        mask_a = _random_subset(n, self.mask_size, _stateless_seed(self.seed, 2, step))
        if self.pattern == "rfm":
            return mask_a, ~mask_a
        mask_b = _random_subset(n, self.mask_size, _stateless_seed(self.seed, 3, step))
        return mask_a, mask_b

    def call(self, step):
        """-> (mask A, mask B), [k] bool each, the same for the same (seed, step)."""
        if self.pattern == "fm":
            keep_a = tf.scatter_nd(
                [[i] for i in self.fixed_features],
                tf.ones([len(self.fixed_features)], tf.bool),
                [self.num_features],
            )
            return ~keep_a, keep_a
        mask_a, mask_b = self._pattern_masks(step)
        if self.cold_start_feature is not None:
            mask_a = _insert(mask_a, self.cold_start_feature, False)
            mask_b = _insert(mask_b, self.cold_start_feature, True)
        return mask_a, mask_b

    def get_config(self):
        return {
            **super().get_config(),
            "num_features": self.num_features,
            "pattern": self.pattern,
            "mutual_info": self.mutual_info,
            "mask_size": self.mask_size,
            "fixed_features": self.fixed_features,
            "seed": self.seed,
            "unranked_features": self.unranked_features,
            "cold_start_feature": self.cold_start_feature,
        }

    def distinct_patterns(self, steps: int) -> int:
        """How many different view-A masks the first `steps` training steps use."""
        return len({tuple(self(step)[0].numpy().tolist()) for step in range(int(steps))})


@tf.keras.utils.register_keras_serializable(package="ssl_retrieval")
class FeatureDropout(tf.keras.layers.Layer):
    """Per-example feature dropout: [B, k] bool, True = the feature is replaced by its default.

    Used by the `fd` baseline on the supervised item tower (DropoutNet-style) and by the earlier
    paper's Feature Dropout SSL task `fd_ssl` (two calls with different salts).
    """

    def __init__(self, num_features: int, rate: float, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        self.num_features = int(num_features)
        self.rate = float(rate)
        self.seed = int(seed)

    def call(self, batch_size, step, salt: int = 0):
        u = tf.random.stateless_uniform(
            tf.stack([batch_size, self.num_features]),
            seed=_stateless_seed(self.seed, 10 + salt, step),
        )
        return u < self.rate

    def get_config(self):
        return {
            **super().get_config(),
            "num_features": self.num_features,
            "rate": self.rate,
            "seed": self.seed,
        }


@tf.keras.utils.register_keras_serializable(package="ssl_retrieval")
class ValueDropout(tf.keras.layers.Layer):
    """Drops each value of a ragged multi-hot feature independently with probability `rate`.

    A row can lose all its values; the model then uses the feature's default embedding.
    """

    def __init__(self, rate: float, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = int(seed)

    def call(self, values, step, salt: int = 0):
        """values: RaggedTensor [B, (n)] -> RaggedTensor [B, (m)], m <= n, order kept."""
        if self.rate == 0.0:
            return values
        flat = values.flat_values
        u = tf.random.stateless_uniform(
            tf.shape(flat), seed=_stateless_seed(self.seed, 100 + salt, step)
        )
        return tf.ragged.boolean_mask(values, values.with_flat_values(u >= self.rate))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
