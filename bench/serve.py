"""Benchmark of serving: ScaNN against brute force, the Python API against HTTP, and the
server's memory over version swaps.

Prints JSON lines, all from this run on the same corpus (and writes them to --out):
  {"figure": "index", "index": "scann" | "brute_force", "build_s", "recall_at_10",
   "batched_queries_per_s", "single_query_p50_ms", "single_query_p99_ms"}
  {"figure": "comparison", "scann_speedup_batched", "scann_speedup_single", goals}
     (ScaNN at its fastest --leaves_to_search setting with Recall@10 >= --min_recall: the
     operating point a user would pick from the recall/speed curve the "index" lines trace)
  {"figure": "api", "queries_per_s", "p50_ms", "p99_ms"}: `ssl_retrieval.load(...).similar`,
     one query at a time in this process (the rate HTTP is compared with)
  {"figure": "http", "clients": 16, "requests", "errors", "p50_ms", "p99_ms", "requests_per_s"}:
     `python -m ssl_retrieval.serve`, --http_clients threads each on one keep-alive connection
     (a minimal client, `KeepAlive`, so that the clients take little of the shared CPU)
  {"figure": "http_vs_api", "ratio", goals}: HTTP requests/s over the API's queries/s
     (goal >= 0.5), HTTP p99 < 50 ms, 0 errors
  {"figure": "reload", "swaps", "rss_mb_after_1", "rss_mb_after_n", "growth"}: the server's
     version follower (`holder.ModelHolder`) in a fresh process, the served version renamed
     to the next number --swaps times, each new version loaded and queried (goal: RSS after
     the last swap within 10% of after the first)
  {"figure": "http_vs_baseline", "requests_per_s", "baseline_requests_per_s", "ratios",
   "ratio_median"}: with --figures=http_ab, the "http" figure of this checkout's server and of
     --baseline_code's (another checkout, e.g. main) alternated --ab_rounds times on the same
     export, each run also printed as an "http" line with its "code"
  {"figure": "abandoned", "requests", "ids_per_request", "sent_s", "probes", "p50_ms",
   "p99_ms", "max_ms", "over_100ms", "errors", "server_log_lines"}: issue 35, item 4.
     --abandoned_requests predict requests of --abandoned_ids ids each sent on their own
     connections, then all closed (clients that gave up), while a prober asks
     /v1/similar/<id> on a new connection every 20 ms; the probes of the --hostile_seconds
     after the attack began (goal: every one answered within 100 ms)
  {"figure": "idle", "sockets", "fd_limit", ...same fields}: issue 35, item 5. The server
     started with --fd_limit file descriptors, then --idle_sockets connections opened and left
     idle (more than the server can hold), the same prober; `server_log_lines` counts what the
     server logged meanwhile (asyncio logged one traceback per refused accept)

The corpus is synthetic: unit vectors around 2,000 cluster centres (real item embeddings are
clustered; uniformly random vectors in 128 dims have no near neighbours to find). Queries are
corpus items, as in "items similar to X". The API, HTTP and reload parts export the same index
inside a real SavedModel (towers of a model trained for a few steps on tiny data, which only
similar_items_by_features uses).

  .venv/bin/python bench/serve.py [--num_items=1000000] [--dim=128] [--http_requests=2000]
      [--leaves_to_search=10,25,100] [--figures=index,api,http,reload,abandoned,idle]
      [--label=...] [--out=results/bench/serve.json]

Without "index" in --figures only the ScaNN index of the first --leaves_to_search is built (no
brute force), for the figures that serve it. --label is copied into every line (e.g. which
code was measured, when the same script is run from two checkouts).
"""

import argparse
import contextlib
import gc
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_retrieval import config as config_lib  # noqa: E402
from ssl_retrieval import testing  # noqa: E402
from ssl_retrieval.compat import tf  # noqa: E402
from ssl_retrieval.model import two_tower as model_lib  # noqa: E402
from ssl_retrieval.serving import (
    api,  # noqa: E402
    exporter,  # noqa: E402
    http_app,  # noqa: E402
)
from ssl_retrieval.serving import index as index_lib  # noqa: E402
from ssl_retrieval.training import trainer  # noqa: E402

EMITTED = []  # the --out file, if any
LABEL = {}  # {"label": --label}, if given


def emit(**fields):
    line = json.dumps({**fields, **LABEL})
    print(line, flush=True)
    for path in EMITTED:
        with open(path, "a") as f:
            f.write(line + "\n")


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
    trainer.run(config)
    model = model_lib.load_from_model_dir(model_dir)
    features = [{"name": f["name"], "kind": f["kind"]} for f in model.encoder.features]
    # The corpus's query-tower embeddings are its item embeddings: one synthetic space.
    module = exporter.SimilarItemsModule(
        model, item_ids, embeddings, embeddings, index, max_k, features
    )
    export_config = exporter.ExportConfig(
        data_dir=data_dir, model_dir=model_dir, export_dir=os.path.join(root, "export")
    )
    info = {
        "version": 1,
        "max_k": max_k,
        "recall_at_10_vs_brute_force": 1.0,
        "features": features,
        "data_dir": data_dir,  # the item catalogue's source (the tiny data, not this corpus)
    }
    return exporter.write(module, info, export_config)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def api_rate(export_dir: str, item_ids, queries: int, k: int) -> dict:
    """The Python API answering one query at a time: the in-process rate HTTP is compared with."""
    model = api.load(export_dir)
    rng = np.random.default_rng(1)
    picks = [item_ids[int(i)] for i in rng.integers(len(item_ids), size=queries)]
    for item in picks[:20]:
        model.similar([item], k)
    latencies = []
    started = time.perf_counter()
    for item in picks:
        t = time.perf_counter()
        model.similar([item], k)
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - started
    p50, p99 = percentiles_ms(latencies)
    return {
        "queries": queries,
        "queries_per_s": round(queries / seconds, 1),
        "p50_ms": p50,
        "p99_ms": p99,
    }


def reload_child(export_dir: str, swaps: int, item_id: str) -> None:
    """Run in a fresh process: RSS of the version follower over `swaps` version swaps."""
    holder = http_app.ModelHolder(export_dir, poll_seconds=0)
    figures = {}
    for swap in range(1, swaps + 1):
        current = holder.model.version
        os.rename(
            os.path.join(export_dir, str(current)), os.path.join(export_dir, str(current + 1))
        )
        if not holder.poll_once() or holder.model.version != current + 1:
            raise RuntimeError(f"swap {swap}: version {current + 1} was not loaded")
        holder.model.similar([item_id], 10)
        gc.collect()
        if swap in (1, swaps):
            figures[swap] = rss_mb()
    print(
        json.dumps(
            {
                "swaps": swaps,
                "rss_mb_after_1": round(figures[1], 1),
                "rss_mb_after_n": round(figures[swaps], 1),
                "growth": round(figures[swaps] / figures[1] - 1, 4),
            }
        ),
        flush=True,
    )


def reload_rss(export_dir: str, swaps: int, item_id: str) -> dict:
    with tempfile.TemporaryDirectory() as root:
        copy = os.path.join(root, "export")
        shutil.copytree(export_dir, copy)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                f"--reload_child={copy}",
                f"--swaps={swaps}",
                f"--reload_item={item_id}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


class KeepAlive:
    """A minimal HTTP/1.1 keep-alive client: GET, status and body (Content-Length framing).

    The clients share the 2 cores with the server; `http.client` parses each response's headers
    with the email package, several times the CPU of this, which the server would then lack.
    """

    def __init__(self, port: int, timeout: float = 60):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, path: str) -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = int(head[9:12])
        length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def http_load(export_dir: str, item_ids, clients: int, requests: int, flags=(), code=None) -> dict:
    with testing.running_server(export_dir, *flags, timeout=600, code=code) as base:
        port = int(base.rsplit(":", 1)[1])
        latencies, errors = [], []
        lock = threading.Lock()
        per_client = requests // clients

        def client(n):
            rng = np.random.default_rng(n)
            conn = KeepAlive(port)
            for _ in range(per_client):
                item = item_ids[int(rng.integers(len(item_ids)))]
                started = time.perf_counter()
                try:
                    status, body = conn.get(f"/v1/similar/{item}?k=10")
                    ok = status == 200 and len(json.loads(body)["neighbors"]) == 10
                    with lock:
                        latencies.append(time.perf_counter() - started)
                        if not ok:
                            errors.append(f"{status}: {body[:200]!r}")
                except Exception as e:  # noqa: BLE001  (counted, not raised: that is the figure)
                    conn.close()
                    conn = KeepAlive(port)
                    with lock:
                        errors.append(repr(e))
            conn.close()

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
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


class Prober:
    """Asks /v1/similar/<id> on a new connection every `interval` s in a thread: what a new
    client waits for while the server is under attack. Records (start time, seconds or None)."""

    def __init__(self, port: int, item_ids, interval: float = 0.02):
        self.port, self.item_ids, self.interval = port, item_ids, interval
        self.results: list[tuple[float, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self):
        rng = np.random.default_rng(7)
        while not self._stop.is_set():
            item = self.item_ids[int(rng.integers(len(self.item_ids)))]
            started = time.perf_counter()
            try:
                conn = KeepAlive(self.port, timeout=30)
                status, _ = conn.get(f"/v1/similar/{item}?k=10")
                conn.close()
                took = time.perf_counter() - started if status == 200 else None
            except OSError:
                took = None
            self.results.append((started, took))
            self._stop.wait(max(0.0, self.interval - (time.perf_counter() - started)))

    def summary(self, since: float, until: float) -> dict:
        window = [t for s, t in self.results if since <= s < until]
        answered = [t for t in window if t is not None]
        p50, p99 = percentiles_ms(answered) if answered else (None, None)
        return {
            "probes": len(window),
            "errors": len(window) - len(answered),
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": round(1000 * max(answered), 3) if answered else None,
            "over_100ms": sum(t > 0.1 for t in answered),
        }


def _hostile(export_dir, item_ids, flags, attack, seconds: float, fd_limit=None) -> dict:
    """Serves the export, probes it for 2 s, runs `attack(port)` (returns a dict of figures,
    may leave sockets open until the window ends), probes `seconds` s from its start."""
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        with testing.running_server(
            export_dir, *flags, timeout=600, fd_limit=fd_limit, log=log
        ) as base:
            port = int(base.rsplit(":", 1)[1])
            with Prober(port, item_ids) as prober:
                time.sleep(2)
                baseline = prober.summary(0, time.perf_counter())
                lines_before = len(open(log.name, "rb").read().splitlines())
                started = time.perf_counter()
                with contextlib.ExitStack() as held:
                    figures = attack(port, held)
                    time.sleep(max(0.0, started + seconds - time.perf_counter()))
                lines = len(open(log.name, "rb").read().splitlines()) - lines_before
            during = prober.summary(started, started + seconds)
    return {
        **figures,
        **during,
        "baseline_p50_ms": baseline["p50_ms"],
        "server_log_lines": lines,
        "meets_100ms_goal": during["errors"] == 0 and (during["max_ms"] or 1e9) < 100,
    }


def abandoned_figure(export_dir, item_ids, args) -> dict:
    rng = np.random.default_rng(3)

    def attack(port, held):
        started = time.perf_counter()
        sockets = []
        for _ in range(args.abandoned_requests):
            ids = [item_ids[int(i)] for i in rng.integers(len(item_ids), size=args.abandoned_ids)]
            body = json.dumps({"instances": ids, "k": 10}).encode()
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(
                f"POST /v1/models/ssl_retrieval:predict HTTP/1.1\r\nHost: bench\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            sockets.append(sock)
        sent = time.perf_counter() - started
        for sock in sockets:
            sock.close()
        return {"requests": len(sockets), "ids_per_request": args.abandoned_ids, "sent_s": sent}

    flags = args.serve_flags.split()
    return _hostile(export_dir, item_ids, flags, attack, args.hostile_seconds)


def idle_figure(export_dir, item_ids, args) -> dict:
    def attack(port, held):
        opened = 0
        for _ in range(args.idle_sockets):
            sock = held.enter_context(socket.socket())
            sock.setblocking(False)  # the server may not accept: do not wait for it
            sock.connect_ex(("127.0.0.1", port))
            opened += 1
        return {"sockets": opened, "fd_limit": args.fd_limit}

    flags = args.serve_flags.split()
    return _hostile(export_dir, item_ids, flags, attack, args.hostile_seconds, args.fd_limit)


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
    sizes = {
        "num_items": 1_000_000,
        "dim": 128,
        "num_clusters": 2000,
        "num_queries": 1000,
        "single_queries": 300,
        "k": 10,
        "http_clients": 16,
        "http_requests": 2000,
        "api_queries": 1000,
    }
    for name, default in sizes.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument(
        "--leaves_to_search",
        default="10,25,100",
        help="ScaNN leaves searched per query (of about sqrt(N)); one 'index' line per value.",
    )
    parser.add_argument("--min_recall", type=float, default=0.95)
    parser.add_argument("--serve_flags", default="", help="Extra flags for the server, spaced.")
    parser.add_argument("--swaps", type=int, default=20, help="Version swaps of the reload figure.")
    parser.add_argument("--out", default=None, help="Also write the JSON lines to this file.")
    parser.add_argument(
        "--figures",
        default="index,api,http,reload,abandoned,idle",
        help="Which figures to measure, comma-separated (see above).",
    )
    parser.add_argument("--label", default=None, help="Copied into every line as 'label'.")
    parser.add_argument(
        "--baseline_code",
        default=None,
        help="Another checkout (e.g. main) whose server the http_ab figure alternates with this one.",
    )
    parser.add_argument("--ab_rounds", type=int, default=3)
    parser.add_argument("--abandoned_requests", type=int, default=200)
    parser.add_argument("--abandoned_ids", type=int, default=1000)
    parser.add_argument("--idle_sockets", type=int, default=5000)
    parser.add_argument(
        "--fd_limit", type=int, default=4096, help="The server's file descriptors (idle figure)."
    )
    parser.add_argument(
        "--hostile_seconds", type=float, default=15.0, help="Probing window of an attack."
    )
    parser.add_argument("--reload_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reload_item", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reload_child:
        reload_child(args.reload_child, args.swaps, args.reload_item)
        return
    if args.out:
        open(args.out, "w").close()
        EMITTED.append(args.out)
    if args.label:
        LABEL["label"] = args.label

    figures = set(args.figures.split(","))
    rng = np.random.default_rng(0)
    embeddings = clustered_corpus(args.num_items, args.dim, args.num_clusters, rng)
    queries = embeddings[rng.choice(args.num_items, size=args.num_queries, replace=False)]
    leaves = [int(v) for v in args.leaves_to_search.split(",")]
    if "index" in figures:
        scann_index = compare_indexes(embeddings, queries, leaves, args)
    else:
        params = index_lib.ScannParams(num_leaves_to_search=leaves[0])
        scann_index = index_lib.build("scann", embeddings, max_k=101, params=params)
    item_ids = [f"item{i:07d}" for i in range(args.num_items)]
    with tempfile.TemporaryDirectory() as root:
        export_dir = os.path.dirname(
            write_export(root, item_ids, embeddings, scann_index, max_k=100)
        )
        del embeddings, queries, scann_index  # the API, the server and the reloads load their own
        gc.collect()
        serve_figures(export_dir, item_ids, figures, args)


def compare_indexes(embeddings, queries, leaves, args):
    """The "index" lines (ScaNN at each leaves setting, brute force) and "comparison"; returns
    the ScaNN index at the chosen operating point."""
    scann_runs = [
        run_index("scann", embeddings, queries, args, index_lib.ScannParams(num_leaves_to_search=n))
        for n in leaves
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
    return scann_index


def http_against_baseline(export_dir: str, item_ids, args) -> None:
    """The "http" figure of this checkout's server and of --baseline_code's, alternated
    --ab_rounds times on the same export (the machine's load moves both alike): one "http" line
    per run, then their ratio."""
    if not args.baseline_code:
        raise SystemExit("--figures=http_ab needs --baseline_code=<another checkout>")
    rates = {"this": [], "baseline": []}
    for _ in range(args.ab_rounds):
        for side, code in (("baseline", args.baseline_code), ("this", None)):
            flags = args.serve_flags.split() if side == "this" else ()
            http = http_load(
                export_dir, item_ids, args.http_clients, args.http_requests, flags, code
            )
            emit(figure="http", corpus=len(item_ids), code=code or "this checkout", **http)
            rates[side].append(http["requests_per_s"])
    ratios = [a / b for a, b in zip(rates["this"], rates["baseline"], strict=True)]
    emit(
        figure="http_vs_baseline",
        corpus=len(item_ids),
        baseline_code=args.baseline_code,
        requests_per_s=rates["this"],
        baseline_requests_per_s=rates["baseline"],
        ratio_median=round(float(np.median(ratios)), 3),
        ratios=[round(r, 3) for r in ratios],
    )


def serve_figures(export_dir: str, item_ids, figures: set, args) -> None:
    """The "api", "http", "http_vs_api", "reload", "abandoned" and "idle" lines asked for."""
    corpus = len(item_ids)
    if "api" in figures:
        api = api_rate(export_dir, item_ids, args.api_queries, args.k)
        emit(figure="api", corpus=corpus, **api)
    if "http" in figures:
        http = http_load(
            export_dir, item_ids, args.http_clients, args.http_requests, args.serve_flags.split()
        )
        emit(figure="http", corpus=corpus, **http)
    if "api" in figures and "http" in figures:
        ratio = http["requests_per_s"] / api["queries_per_s"]
        emit(
            figure="http_vs_api",
            corpus=corpus,
            clients=args.http_clients,
            http_requests_per_s=http["requests_per_s"],
            api_queries_per_s=api["queries_per_s"],
            ratio=round(ratio, 3),
            http_p99_ms=http["p99_ms"],
            errors=http["errors"],
            meets_ratio_goal=ratio >= 0.5,
            meets_p99_goal=http["p99_ms"] is not None and http["p99_ms"] < 50,
            meets_error_goal=http["errors"] == 0,
        )
    if "http_ab" in figures:
        http_against_baseline(export_dir, item_ids, args)
    if "reload" in figures:
        reload = reload_rss(export_dir, args.swaps, item_ids[0])
        emit(figure="reload", corpus=corpus, **reload, meets_memory_goal=reload["growth"] <= 0.10)
    if "abandoned" in figures:
        emit(figure="abandoned", corpus=corpus, **abandoned_figure(export_dir, item_ids, args))
    if "idle" in figures:
        emit(figure="idle", corpus=corpus, **idle_figure(export_dir, item_ids, args))


if __name__ == "__main__":
    main()
