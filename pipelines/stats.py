"""Training statistics for evaluation slices: candidate counts, the head set, the cold set; and
the reverse-link leak: eval and validation pairs whose reverse pair is in training.

The candidate counts are gathered and sorted on one worker to write one ranked file (one line per
distinct training candidate); everything before that is a CombinePerKey. The reverse links are
counted per bucket of links (`CountReverseLinks`); only the per-bucket counts are gathered.
"""

from __future__ import annotations

import json
import math

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines import batches, pairs
from ssl_retrieval import data_dir as data_dir_lib


class ComputeSliceStats(beam.PTransform):
    """Lists of train/eval candidate ids -> files under `<directory>/stats/` and a summary dict.

    Writes:
      stats/candidate_counts.tsv  "<id>\\t<count>", count desc then id;
      stats/head_items.txt        the top `head_fraction` of distinct training candidates;
      stats/cold_items.txt        eval candidates never seen as training candidates.
    Returns a PCollection with one dict: num_train_candidates, num_head_items, num_cold_items.
    The counts are merged into one Counter per split: one worker holds the distinct candidates.

    With `ids` (the side input of `pairs.catalogue_ids` elements) the inputs are arrays of item
    indices (`pairs.LookupPairs`), counted in arrays (`batches.CountIndices`) until the write.
    """

    def __init__(self, directory: str, head_fraction: float, ids=None):
        super().__init__()
        self._directory = directory
        self._head_fraction = head_fraction
        self._ids = ids

    def expand(self, inputs):
        directory, head_fraction = self._directory, self._head_fraction
        by_index = self._ids is not None

        def write(_, train, evals, ids=None):
            if by_index:
                names = [item for bucket in pairs.ids_in_order(ids) for item in bucket]
                train, evals = (
                    {names[i]: int(counts[i]) for i in np.flatnonzero(counts)}
                    for counts in (train, evals)
                )
            ranked = sorted(train.items(), key=lambda kv: (-kv[1], kv[0]))
            head = ranked[: int(math.ceil(head_fraction * len(ranked)))]
            cold = sorted(c for c in evals if c not in train)
            files = (
                (data_dir_lib.CANDIDATE_COUNTS, (f"{c}\t{n}\n" for c, n in ranked)),
                (data_dir_lib.HEAD_ITEMS, (f"{c}\n" for c, _ in head)),
                (data_dir_lib.COLD_ITEMS, (f"{c}\n" for c in cold)),
            )
            for name, lines in files:
                with FileSystems.create(FileSystems.join(directory, name)) as f:
                    f.write("".join(lines).encode("utf-8"))
            yield {
                "num_train_candidates": len(ranked),
                "num_head_items": len(head),
                "num_cold_items": len(cold),
            }

        def counted(name):
            combine = batches.CountIndices() if by_index else batches.MergeCounts()
            return inputs[name] | f"Count_{name}" >> beam.CombineGlobally(combine)

        return (
            inputs["train_candidates"].pipeline
            | "Once" >> beam.Create([None])
            | "WriteStats"
            >> beam.FlatMap(
                write,
                train=beam.pvalue.AsSingleton(counted("train_candidates")),
                evals=beam.pvalue.AsSingleton(counted("eval_candidates")),
                **({"ids": self._ids} if by_index else {}),
            )
        )


REVERSE_COUNTS = ("eval_pairs_with_reverse_in_train", "validation_pairs_with_reverse_in_train")


def reverse_counts(records: np.ndarray) -> dict[str, int]:
    """How many eval and validation pairs have their reverse pair in training, from the
    `pairs.LINK_RECORD`s of every split pair of some links (all of each link's records).

    A pair counts once per record (duplicates included, as in the split's pair counts).
    """
    links, inverse = np.unique(records["link"], return_inverse=True)
    # counts[link, split, direction]
    counts = np.bincount(
        inverse.astype(np.int64) * 6 + records["code"], minlength=len(links) * 6
    ).reshape(-1, 3, 2)
    reverse_in_train = counts[:, 0, ::-1] > 0  # [link, direction]: the other direction trains
    splits = pairs.LINK_SPLITS
    return {
        name: int(counts[:, splits.index(split), :][reverse_in_train].sum())
        for name, split in zip(REVERSE_COUNTS, (pairs.EVAL, pairs.VALIDATION), strict=True)
    }


class CountReverseLinks(beam.PTransform):
    """`pairs.LINK_RECORD` batches (bytes) -> ("<split>_pairs_with_reverse_in_train", count)
    per link bucket (`reverse_counts`); the driver adds them up.

    Records are routed by their link to `num_buckets` buckets and counted per bucket: a
    GroupByKey of 9 bytes a pair, no worker holds more than its bucket's links.
    """

    def __init__(self, num_buckets: int):
        super().__init__()
        self._num_buckets = num_buckets

    def expand(self, links):
        num_buckets = self._num_buckets

        def route(blob):
            records = np.frombuffer(blob, dtype=pairs.LINK_RECORD)
            # The link's high bits after a multiplicative mix: item indices are not uniform.
            mixed = records["link"] * np.uint64(0x9E3779B97F4A7C15) >> np.uint64(32)
            bucket = (mixed % np.uint64(num_buckets)).astype(np.int64)
            for b in np.unique(bucket).tolist():
                yield b, records[bucket == b].tobytes()

        def count(element):
            _, blobs = element
            records = np.frombuffer(b"".join(blobs), dtype=pairs.LINK_RECORD)
            yield from reverse_counts(records).items()

        return (
            links
            | "RouteLinks" >> beam.FlatMap(route)
            | "GroupLinks" >> beam.GroupByKey()
            | "CountReverse" >> beam.FlatMap(count)
        )


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)
