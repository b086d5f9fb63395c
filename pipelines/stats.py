"""Training statistics for evaluation slices: candidate counts, the head set, the cold set.

The candidate counts are gathered and sorted on one worker to write one ranked file (one line per
distinct training candidate); everything before that is a CombinePerKey.
"""

from __future__ import annotations

import json
import math

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from ssl_retrieval import data_dir as data_dir_lib


class ComputeSliceStats(beam.PTransform):
    """train/eval candidate ids -> files under `<directory>/stats/` and a summary dict.

    Writes:
      stats/candidate_counts.tsv  "<id>\\t<count>", count desc then id;
      stats/head_items.txt        the top `head_fraction` of distinct training candidates;
      stats/cold_items.txt        eval candidates never seen as training candidates.
    Returns a PCollection with one dict: num_train_candidates, num_head_items, num_cold_items.
    """

    def __init__(self, directory: str, head_fraction: float):
        super().__init__()
        self._directory = directory
        self._head_fraction = head_fraction

    def expand(self, inputs):
        directory, head_fraction = self._directory, self._head_fraction
        train_counts = (
            inputs["train_candidates"]
            | "OneEach" >> beam.Map(lambda c: (c, 1))
            | "CountCandidates" >> beam.CombinePerKey(sum)
        )

        def write_ranked(_, counts):
            ranked = sorted(counts, key=lambda kv: (-kv[1], kv[0]))
            head = ranked[: int(math.ceil(head_fraction * len(ranked)))]
            with FileSystems.create(
                FileSystems.join(directory, data_dir_lib.CANDIDATE_COUNTS)
            ) as f:
                for item_id, count in ranked:
                    f.write(f"{item_id}\t{count}\n".encode())
            with FileSystems.create(FileSystems.join(directory, data_dir_lib.HEAD_ITEMS)) as f:
                for item_id, _ in head:
                    f.write(f"{item_id}\n".encode())
            yield {"num_train_candidates": len(ranked), "num_head_items": len(head)}

        ranked = (
            train_counts.pipeline
            | "RankOnce" >> beam.Create([None])
            | "WriteRanked" >> beam.FlatMap(write_ranked, counts=beam.pvalue.AsIter(train_counts))
        )

        def cold(element):
            item_id, grouped = element
            if grouped["eval"] and not grouped["train"]:
                yield item_id

        cold_ids = (
            {
                "train": train_counts,
                "eval": inputs["eval_candidates"] | "EvalOnce" >> beam.Map(lambda c: (c, 1)),
            }
            | "JoinSplits" >> beam.CoGroupByKey()
            | "ColdOnly" >> beam.FlatMap(cold)
        )

        def write_cold(_, ids):
            ids = sorted(ids)
            with FileSystems.create(FileSystems.join(directory, data_dir_lib.COLD_ITEMS)) as f:
                for item_id in ids:
                    f.write(f"{item_id}\n".encode())
            yield {"num_cold_items": len(ids)}

        cold_summary = (
            cold_ids.pipeline
            | "ColdOnce" >> beam.Create([None])
            | "WriteCold" >> beam.FlatMap(write_cold, ids=beam.pvalue.AsIter(cold_ids))
        )
        return (ranked, cold_summary) | "StatsSummary" >> beam.Flatten()


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)
