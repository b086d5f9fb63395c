"""Benchmark of serving (issue 6): ScaNN against brute force on 1M x 128, in-process and over HTTP.

Prints JSON lines, all from this run on the same corpus:
  {"figure": "index", "index": "scann" | "brute_force", "build_s", "recall_at_10",
   "batched_queries_per_s", "single_query_p50_ms", "single_query_p99_ms"}
  {"figure": "comparison", "scann_speedup_batched", "scann_speedup_single", goals}
     (ScaNN at its fastest --leaves_to_search setting with Recall@10 >= --min_recall: the
     operating point a user would pick from the recall/speed curve the "index" lines trace)
  {"figure": "http", "clients": 16, "requests", "errors", "p50_ms", "p99_ms", "requests_per_s"}

The corpus is synthetic: unit vectors around 2,000 cluster centres (real item embeddings are
clustered; uniformly random vectors in 128 dims have no near neighbours to find). Queries are
corpus items, as in "items similar to X". The HTTP part exports the same index inside a real
SavedModel (towers of a model trained for a few steps on tiny data, which only
similar_items_by_features uses) and serves it with `python -m ssl_retrieval.serve`.

  .venv/bin/python bench/serve.py [--num_items=1000000] [--dim=128] [--http_requests=2000]
      [--leaves_to_search=10,25,100]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_retrieval import config as config_lib  # noqa: E402
from ssl_retrieval import exporting, testing, training  # noqa: E402
from ssl_retrieval import index as index_lib  # noqa: E402
from ssl_retrieval import model as model_lib  # noqa: E402
from ssl_retrieval.compat import tf  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


def clustered_corpus(num_items: int, dim: int, num_clusters: int, rng) -> np.ndarray:
    centres = rng.normal(size=(num_clusters, dim)).astype(np.float32)
    x = np.empty((num_items, dim), np.float32)
    for lo in range(0, num_items, 100_000):  # bounded temporaries
        n = min(100_000, num_items - lo)
        x[lo : lo + n] = centres[rng.integers(num_clusters, size=n)]
        x[lo : lo + n] += 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    ms = 1000 * np.asarray(seconds)
    return round(float(np.percentile(ms, 50)), 3), round(float(np.percentile(ms, 99)), 3)


def measure_index(index, queries: np.ndarray, k: int, single: int) -> dict:
    search = tf.function(index.search)
    batch = tf.constant(queries, tf.float32)
    # Trace and warm up on the shapes that are timed: a new shape retraces the tf.function,
    # which would otherwise be counted as search time.
    search(batch, k)[1].numpy()
    search(batch[:1], k)[1].numpy()
    batched_seconds = []
    for _ in range(3):
        started = time.perf_counter()
        search(batch, k)[1].numpy()
        batched_seconds.append(time.perf_counter() - started)
    batched_qps = len(queries) / float(np.median(batched_seconds))
    latencies = []
    for i in range(single):
        one = batch[i : i + 1]
        started = time.perf_counter()
        search(one, k)[1].numpy()
        latencies.append(time.perf_counter() - started)
    p50, p99 = percentiles_ms(latencies)
    return {
        "batched_queries_per_s": round(batched_qps, 1),
        "single_query_p50_ms": p50,
        "single_query_p99_ms": p99,
    }


def write_export(root: str, item_ids, embeddings, index, max_k: int) -> str:
    data_dir = testing.make_data_dir(os.path.join(root, "tiny_data"))
    model_dir = os.path.join(root, "tiny_model")
    dim = embeddings.shape[1]
    config = config_lib.TrainConfig(
        data_dir=data_dir,
        model_dir=model_dir,
        batch_size=32,
        hidden_layers=(32, dim),
        embedding_dim=8,
        train_steps=2,
    )
    training.run(config)
    model = model_lib.load_from_model_dir(model_dir)
    features = [{"name": f["name"], "kind": f["kind"]} for f in model.encoder.features]
    module = exporting.SimilarItemsModule(model, item_ids, embeddings, index, max_k, features)
    export_config = exporting.ExportConfig(
        data_dir=data_dir, model_dir=model_dir, export_dir=os.path.join(root, "export")
    )
    info = {"version": 1, "max_k": max_k, "recall_at_10_vs_brute_force": 1.0, "features": features}
    return exporting.write(module, info, export_config)


def http_load(export_dir: str, item_ids, clients: int, requests: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ssl_retrieval.serve",
            f"--export_dir={export_dir}",
            f"--port={port}",
            "--poll_seconds=0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(server.stderr.read().decode()[-3000:]) from None
                time.sleep(1)
        latencies, errors = [], []
        lock = threading.Lock()
        per_client = requests // clients

        def client(n):
            rng = np.random.default_rng(n)
            for _ in range(per_client):
                item = item_ids[int(rng.integers(len(item_ids)))]
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"{base}/v1/similar/{item}?k=10", timeout=60) as r:
                        ok = len(json.load(r)["neighbors"]) == 10
                    with lock:
                        latencies.append(time.perf_counter() - started)
                        if not ok:
                            errors.append("short answer")
                except Exception as e:  # noqa: BLE001  (counted, not raised: that is the figure)
                    with lock:
                        errors.append(repr(e))

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    p50, p99 = percentiles_ms(latencies) if latencies else (None, None)
    return {
        "clients": clients,
        "requests": per_client * clients,
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": p50,
        "p99_ms": p99,
        "requests_per_s": round(per_client * clients / seconds, 1),
    }


def run_index(kind, embeddings, queries, args, params=None):
    """Builds one index, prints its "index" line, returns (index, figures)."""
    index = index_lib.build(kind, embeddings, max_k=101, params=params or index_lib.ScannParams())
    recall = index_lib.recall_against_brute_force(index, embeddings, queries, args.k)
    figures = measure_index(index, queries, args.k, args.single_queries)
    emit(
        figure="index",
        index=kind,
        num_items=len(embeddings),
        dim=embeddings.shape[1],
        params=dict(index.params),
        build_s=round(index.build_seconds, 2),
        recall_at_10=round(recall, 4),
        **figures,
    )
    return index, {**figures, "recall": recall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--num_clusters", type=int, default=2000)
    parser.add_argument("--num_queries", type=int, default=1000)
    parser.add_argument("--single_queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--http_clients", type=int, default=16)
    parser.add_argument("--http_requests", type=int, default=2000)
    parser.add_argument(
        "--leaves_to_search",
        default="10,25,100",
        help="ScaNN leaves searched per query (of about sqrt(N)); one 'index' line per value.",
    )
    parser.add_argument("--min_recall", type=float, default=0.95)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    embeddings = clustered_corpus(args.num_items, args.dim, args.num_clusters, rng)
    queries = embeddings[rng.choice(args.num_items, size=args.num_queries, replace=False)]
    scann_runs = [
        run_index("scann", embeddings, queries, args, index_lib.ScannParams(num_leaves_to_search=n))
        for n in [int(v) for v in args.leaves_to_search.split(",")]
    ]
    _, brute = run_index("brute_force", embeddings, queries, args)
    good = [r for r in scann_runs if r[1]["recall"] >= args.min_recall]
    scann_index, scann = max(good or scann_runs, key=lambda r: r[1]["batched_queries_per_s"])
    del scann_runs, good  # the other indexes (~0.6 GB each at 1M) before the export
    speedup = scann["batched_queries_per_s"] / brute["batched_queries_per_s"]
    emit(
        figure="comparison",
        scann_params=dict(scann_index.params),
        scann_recall_at_10=round(scann["recall"], 4),
        scann_speedup_batched=round(speedup, 1),
        scann_speedup_single=round(brute["single_query_p50_ms"] / scann["single_query_p50_ms"], 1),
        meets_recall_goal=scann["recall"] >= args.min_recall,
        meets_speed_goal=speedup >= 10,
        meets_latency_goal=scann["single_query_p99_ms"] < 5,
    )
    item_ids = [f"item{i:07d}" for i in range(args.num_items)]
    with tempfile.TemporaryDirectory() as root:
        export_dir = write_export(root, item_ids, embeddings, scann_index, max_k=100)
        emit(
            figure="http",
            corpus=args.num_items,
            **http_load(
                os.path.dirname(export_dir), item_ids, args.http_clients, args.http_requests
            ),
        )


if __name__ == "__main__":
    main()
