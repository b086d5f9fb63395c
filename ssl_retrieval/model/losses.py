"""Loss heads: the batch-softmax contrastive loss (eqs. 3 and 6) and spread-out regularisers.

`ContrastiveSoftmax` is shaped like `tfrs.tasks.Retrieval` (query embeddings, candidate
embeddings, sample weights, candidate ids, sampling probabilities) and serves both the main task
(eq. 6, query vs. candidate) and the SSL task (eq. 3, view 1 vs. view 2). Unlike the TFRS task it
uses cosine similarity, returns the loss reduced the tf.distribute way, and, with more than one
replica, gathers the candidates of every replica so that the negatives are the global batch, as
in the paper.
"""

from __future__ import annotations

from ssl_retrieval.compat import tf

_MASK_LOGIT = -1e9


def _append_negatives(embeddings, ids, probability, extra, extra_ids, extra_probability):
    if (ids is None) != (extra_ids is None):
        raise ValueError("pass candidate_ids and extra_ids together, or neither")
    if (probability is None) != (extra_probability is None):
        raise ValueError(
            "pass candidate_sampling_probability and extra_sampling_probability together"
        )
    embeddings = tf.concat([embeddings, tf.cast(extra, embeddings.dtype)], axis=0)
    if ids is not None:
        ids = tf.concat([ids, tf.cast(extra_ids, ids.dtype)], axis=0)
    if probability is not None:
        probability = tf.concat(
            [tf.cast(probability, tf.float32), tf.cast(extra_probability, tf.float32)], axis=0
        )
    return embeddings, ids, probability


def _gather_across_replicas(tensor: tf.Tensor) -> tf.Tensor:
    """[B, ...] on each replica -> [B * replicas, ...], replica 0 first (differentiable)."""
    ctx = tf.distribute.get_replica_context()
    return ctx.all_gather(tensor, axis=0)


@tf.keras.utils.register_keras_serializable(package="ssl_retrieval")
class ContrastiveSoftmax(tf.keras.layers.Layer):
    """Batch softmax cross entropy over cosine similarities, in-batch negatives.

    loss_i = -log( exp(s(q_i, c_i)/t) / sum_j exp(s(q_i, c_j)/t) )   (eqs. 3 and 6)

    Returns sum_i w_i loss_i / global_batch, so that summing the value over replicas gives the
    global mean (the `tf.nn.compute_average_loss` convention); with one replica it is the mean.

    Args:
      temperature: softmax temperature t (paper: 0.07 for the main task).
      remove_accidental_hits: mask negatives j whose candidate id equals the positive's (only
        when `candidate_ids` is passed); the positive itself is kept.
      cross_replica: with more than one replica in sync, use every replica's candidates as
        negatives (label of local row i: replica_id * B + i).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        remove_accidental_hits: bool = True,
        cross_replica: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.cross_replica = bool(cross_replica)

    def call(
        self,
        query_embeddings,
        candidate_embeddings,
        sample_weight=None,
        candidate_ids=None,
        candidate_sampling_probability=None,
        extra_embeddings=None,
        extra_ids=None,
        extra_sampling_probability=None,
    ):
        """Args: query_embeddings [B, d], candidate_embeddings [B, d], sample_weight [B],
        candidate_ids [B] (any dtype), candidate_sampling_probability [B] (logQ correction:
        each column's logit is lowered by log of this value), extra_embeddings [M, d]: more
        negatives (mixed negative sampling: items drawn from the corpus), with their ids [M] and
        sampling probabilities [M] (same meaning as the candidates'). With extras, pass ids and
        probabilities for both or for neither.

        Returns: scalar loss (see class docstring).
        """
        if extra_embeddings is not None:
            # Extra negatives go after the candidates, so the labels stay the diagonal. They are
            # gathered across replicas like the candidates, as one block per replica.
            candidate_embeddings, candidate_ids, candidate_sampling_probability = _append_negatives(
                candidate_embeddings,
                candidate_ids,
                candidate_sampling_probability,
                extra_embeddings,
                extra_ids,
                extra_sampling_probability,
            )
        if candidate_ids is not None and candidate_ids.dtype == tf.string:
            # Collectives do not carry strings; a 63-bit hash keeps ids distinct in practice.
            candidate_ids = tf.strings.to_hash_bucket_fast(candidate_ids, 2**63 - 1)
        q = tf.math.l2_normalize(query_embeddings, axis=-1)
        c = tf.math.l2_normalize(candidate_embeddings, axis=-1)
        local_batch = tf.shape(q)[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        replica = 0
        ctx = tf.distribute.get_replica_context()
        if self.cross_replica and replicas > 1 and ctx is not None:
            c = _gather_across_replicas(c)
            if candidate_ids is not None:
                candidate_ids = _gather_across_replicas(candidate_ids)
            if candidate_sampling_probability is not None:
                candidate_sampling_probability = _gather_across_replicas(
                    candidate_sampling_probability
                )
            replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
        logits = tf.matmul(q, c, transpose_b=True) / self.temperature  # [B, B_all]
        # Row i's positive: each replica's block of columns is [its B candidates, its M extras].
        block = tf.shape(candidate_embeddings)[0]
        labels = tf.range(local_batch) + replica * block
        if candidate_sampling_probability is not None:
            logq = tf.math.log(tf.cast(candidate_sampling_probability, logits.dtype))
            logits -= logq[tf.newaxis, :]
        if self.remove_accidental_hits and candidate_ids is not None:
            positive_ids = tf.gather(candidate_ids, labels)
            same = tf.equal(positive_ids[:, tf.newaxis], candidate_ids[tf.newaxis, :])
            is_label = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)
            logits = tf.where(same & ~is_label, tf.cast(_MASK_LOGIT, logits.dtype), logits)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        if sample_weight is not None:
            per_example *= tf.cast(sample_weight, per_example.dtype)
        global_batch = tf.cast(local_batch * replicas, per_example.dtype)
        return tf.reduce_sum(per_example) / global_batch

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "remove_accidental_hits": self.remove_accidental_hits,
            "cross_replica": self.cross_replica,
        }


SPREAD_OUT_KINDS = ("square", "softmax")


def spread_out_loss(embeddings, kind: str = "square", temperature: float = 0.07):
    """Spread-out regulariser on a batch of embeddings [B, d] (L2-normalised inside).

    square:  (1/B) sum_i sum_{j != i} <z_i, z_j>^2     (Zhang et al. 2017, as in the paper 3.1)
    softmax: eq. 3 with z' = z: -(1/B) sum_i log softmax_j(<z_i, z_j>/t)_i   (the paper's special
             case of SSL with identity augmentations)

    Returns the mean over the local batch (scalar); divide by the number of replicas when the
    per-replica values are summed.
    """
    if kind not in SPREAD_OUT_KINDS:
        raise ValueError(f"--so_loss must be one of {list(SPREAD_OUT_KINDS)}, got {kind!r}")
    z = tf.math.l2_normalize(embeddings, axis=-1)
    sims = tf.matmul(z, z, transpose_b=True)
    batch = tf.shape(z)[0]
    if kind == "square":
        off_diagonal = 1.0 - tf.eye(batch, dtype=sims.dtype)
        return tf.reduce_sum(tf.square(sims) * off_diagonal) / tf.cast(batch, sims.dtype)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.range(batch), logits=sims / temperature
    )
    return tf.reduce_mean(per_example)
