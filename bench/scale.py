"""Benchmark of the whole flow at scale on the synthetic source (issue 14): raw data, Beam
preprocessing, one epoch of training, evaluation, export with ScaNN, queries through the API.

Each stage is the real command in a subprocess, in order (as scripts/demo.sh runs them):
  source      python -m ssl_retrieval.sources --source=synthetic (--format, --source_shards)
  preprocess  python -m pipelines.preprocess ... --direct_running_mode=multi_processing
              --direct_num_workers=2 (DirectRunner, 2 worker processes)
  train       python -m ssl_retrieval.train with the package defaults (the default recipe,
              configs/recipe.cfg) and --epochs=1: at most one epoch (patience may stop it
              sooner); --train_flags adds flags (the line records them)
  evaluate    python -m ssl_retrieval.evaluate over the whole corpus, on a fixed random sample
              of --eval_queries (10,000) eval queries (its --max_queries; 0 = all of them)
  export      python -m ssl_retrieval.export: SavedModel + ScaNN index, its Recall@10 against
              brute force on 1,000 corpus items (export's own check)
  api         --api_queries corpus items (a fixed random sample) through
              `ssl_retrieval.load(export_dir).similar(ids, k=10)` in calls of --api_batch ids
              (throughput: how a job that needs 10,000 lists asks), after the first 1,000 of
              them one per call (latency: p50, p99), in a fresh process (loading and the
              latency sample included in the stage's time)

Per stage: wall time of the subprocess; peak RSS = the maximum over time of the summed RSS of
the stage's process and all its descendants (Beam's worker processes), sampled from /proc every
0.5 s by a thread here (a sum of RSS counts shared pages once per process, so it is an upper
bound); `ru_maxrss_gb`, the kernel's figure from wait4, is the largest single process of the
tree; throughput in named units. Prints JSON lines (stdout) and appends them to --out:
  {"figure": "scale", "stage", "seconds", "peak_rss_gb", "ru_maxrss_gb", "throughput":
   {"<unit>_per_s": ...}, "items", "pairs", <stage figures: train steps and validations,
   eval Recall@K and the query sample size, ScaNN Recall@10 and build time, API p50/p99>}
  {"figure": "scale_total", "seconds", "minutes", "max_peak_rss_gb", "goal_minutes": 60,
   "goal_gb": 8, "complete", "meets_goals"}      (complete: all six stages measured)

Work dir (--work_dir): raw/, data/, model/, eval/, export/, api/, logs/<stage>.log (each
command's output), stages.jsonl (every stage line so far). Resuming: a stage whose output is
already there is skipped and its recorded line reused (marked "reused"); --force runs the
selected stages again; a stage whose input is newer than its output (its upstream stage ran
again) runs again. A stage that runs starts from an empty output (never resumes a half).
Progress lines (each stage's command, a heartbeat every minute with RSS and the stage's last
log line) go to stderr.

  .venv/bin/python bench/scale.py                       # 1M items, 10M pairs, runs/scale
  .venv/bin/python bench/scale.py --num_items=20000 --num_pairs=200000 \\
      --work_dir=runs/scale_small --out=runs/scale_small/scale.jsonl
  .venv/bin/python bench/scale.py --stages=evaluate,export,api --force
"""

import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("source", "preprocess", "train", "evaluate", "export", "api")
# The stage whose output each stage reads (reruns propagate along these).
NEEDS = {
    "preprocess": "source",
    "train": "preprocess",
    "evaluate": "train",
    "export": "train",
    "api": "export",
}
GOAL_MINUTES = 60
GOAL_GB = 8
GB = 1024**3
PAGE = os.sysconf("SC_PAGE_SIZE")
RECORD = "stages.jsonl"
ARGS_FILE = "bench_args.json"


def progress(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- peak RSS of a process tree ----------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    """ppid -> pids, from /proc/*/stat (the process tree right now)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # The command name (2nd field) may hold spaces and parentheses: split after its ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_rss(pid: int) -> tuple[int, int]:
    """(summed RSS in bytes, process count) of `pid` and all its descendants."""
    children = _children_map()
    total, count, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
            count += 1
        except (OSError, IndexError, ValueError):
            continue
    return total, count


class TreeSampler(threading.Thread):
    """Samples `tree_rss(pid)` every `interval` s; a progress line every `report_every` s."""

    def __init__(self, pid, stage, log_path, interval=0.5, report_every=60.0):
        super().__init__(daemon=True)
        self.pid, self.stage, self.log_path = pid, stage, log_path
        self.interval, self.report_every = interval, report_every
        self.peak = 0
        self.max_processes = 0
        self._finish = threading.Event()

    def run(self):
        start = last_report = time.monotonic()
        while not self._finish.is_set():
            rss, count = tree_rss(self.pid)
            self.peak = max(self.peak, rss)
            self.max_processes = max(self.max_processes, count)
            now = time.monotonic()
            if now - last_report >= self.report_every:
                last_report = now
                progress(
                    f"{self.stage}: {now - start:.0f}s, RSS {rss / GB:.2f} GB in {count} "
                    f"process(es), peak {self.peak / GB:.2f} GB | {last_line(self.log_path)}"
                )
            self._finish.wait(self.interval)

    def stop(self) -> int:
        self._finish.set()
        self.join()
        return self.peak


def last_line(path: str, limit: int = 160, count: int = 1) -> str:
    """The last `count` non-empty lines of a log, joined by " | " (what the stage is doing)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 8192))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(ln.strip()[:limit] for ln in lines[-count:])


def run_measured(stage: str, argv: list[str], log_path: str) -> dict:
    """Runs `argv` with its output in `log_path`; wall time, peak tree RSS, wait4's ru_maxrss."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(argv) + "\n")
        log.flush()
        start = time.monotonic()
        # Own session: an interrupt here ends the stage's whole tree (Beam workers too).
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )
        sampler = TreeSampler(proc.pid, stage, log_path)
        sampler.start()
        try:
            # wait4, not wait: its rusage is this child's (and its reaped descendants').
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            sampler.stop()
            raise
        seconds = time.monotonic() - start
        peak = sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak / GB, 3),
        "ru_maxrss_gb": round(usage.ru_maxrss * 1024 / GB, 3),  # Linux: kB
        "max_processes": sampler.max_processes,
    }


# --- the stages ----------------------------------------------------------------------------------


class Paths:
    def __init__(self, work_dir: str):
        self.work = work_dir
        self.raw = os.path.join(work_dir, "raw")
        self.data = os.path.join(work_dir, "data")
        self.model = os.path.join(work_dir, "model")
        self.eval_dir = os.path.join(work_dir, "eval")
        self.metrics = os.path.join(self.eval_dir, "metrics.json")
        self.export = os.path.join(work_dir, "export")
        self.api_dir = os.path.join(work_dir, "api")
        self.api = os.path.join(self.api_dir, "result.json")

    def output(self, stage: str) -> str:
        """The directory or file a stage writes (removed before the stage runs again)."""
        return {
            "source": self.raw,
            "preprocess": self.data,
            "train": self.model,
            "evaluate": self.eval_dir,
            "export": self.export,
            "api": self.api_dir,
        }[stage]

    def marker(self, stage: str) -> str | None:
        """The stage's completion marker (each command writes it last, or atomically), or None."""
        if stage == "export":
            found = glob.glob(os.path.join(self.export, "*", "export_info.json"))
            return max(found, key=os.path.getmtime) if found else None
        marker = {
            "source": os.path.join(self.raw, "schema.json"),
            "preprocess": os.path.join(self.data, "schema.json"),
            "train": os.path.join(self.model, "train_metrics.json"),
            "evaluate": self.metrics,
            "api": self.api,
        }[stage]
        return marker if os.path.exists(marker) else None

    def done(self, stage: str) -> bool:
        return self.marker(stage) is not None

    def stale(self, stage: str) -> bool:
        """True when the output the stage read has been rewritten since the stage ran."""
        need = NEEDS.get(stage)
        if need is None or not self.done(need):
            return False
        return os.path.getmtime(self.marker(need)) > os.path.getmtime(self.marker(stage))


def command(stage: str, args, paths: Paths) -> list[str]:
    py = sys.executable
    if stage == "source":
        return [
            py,
            "-m",
            "ssl_retrieval.sources",
            "--source=synthetic",
            f"--num_items={args.num_items}",
            f"--num_pairs={args.num_pairs}",
            f"--num_shards={args.source_shards}",
            f"--format={args.format}",
            f"--output_dir={paths.raw}",
        ]
    if stage == "preprocess":
        return [
            py,
            "-m",
            "pipelines.preprocess",
            f"--items={paths.raw}/items*.{args.format}",
            f"--pairs={paths.raw}/pairs*.{args.format}",
            f"--schema={paths.raw}/schema.json",
            f"--output_dir={paths.data}",
            # Not preprocess flags: they pass through to Beam's DirectRunner.
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
            *shlex.split(args.preprocess_flags),
        ]
    if stage == "train":
        return [
            py,
            "-m",
            "ssl_retrieval.train",
            f"--data_dir={paths.data}",
            f"--model_dir={paths.model}",
            "--epochs=1",
            *shlex.split(args.train_flags),
        ]
    if stage == "evaluate":
        return [
            py,
            "-m",
            "ssl_retrieval.evaluate",
            f"--data_dir={paths.data}",
            f"--model_dir={paths.model}",
            f"--output={paths.metrics}",
            f"--max_queries={args.eval_queries}",
        ]
    if stage == "export":
        return [
            py,
            "-m",
            "ssl_retrieval.export",
            f"--data_dir={paths.data}",
            f"--model_dir={paths.model}",
            f"--export_dir={paths.export}",
        ]
    return [
        py,
        os.path.abspath(__file__),
        f"--api_child={paths.export}",
        f"--data_dir={paths.data}",
        f"--api_queries={args.api_queries}",
        f"--api_batch={args.api_batch}",
        f"--out={paths.api}",
    ]


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _per_s(count, seconds) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("nan")


def _disk_mb(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return round(total / 1024**2, 1)


def stage_figures(stage: str, args, paths: Paths, seconds: float) -> dict:
    """Throughput and the stage's own numbers, read from what its command wrote."""
    if stage == "source":
        summary = _json(os.path.join(paths.raw, "summary.json"))
        records = summary["items"] + summary["pairs"]
        return {
            "throughput": {
                "records_per_s": _per_s(records, seconds),
                "pairs_per_s": _per_s(summary["pairs"], seconds),
            },
            "format": args.format,
            "shards": args.source_shards,
            "raw_mb": _disk_mb(paths.raw),
        }
    if stage == "preprocess":
        counts = _json(os.path.join(paths.data, "schema.json")).get("counts", {})
        return {
            "throughput": {
                "pairs_per_s": _per_s(args.num_pairs, seconds),
                "items_per_s": _per_s(args.num_items, seconds),
            },
            "counts": counts,
            "beam": "DirectRunner multi_processing, 2 workers",
            "preprocess_flags": args.preprocess_flags,
            "data_mb": _disk_mb(paths.data),
        }
    if stage == "train":
        summary = _json(os.path.join(paths.model, "train_metrics.json"))
        config = _json(os.path.join(paths.model, "config.json"))
        validations = os.path.join(paths.model, "validation.jsonl")
        num_validations = 0
        if os.path.exists(validations):
            with open(validations) as f:
                num_validations = sum(1 for line in f if line.strip())
        examples = summary["steps"] * config["batch_size"]
        return {
            "throughput": {"examples_per_s": _per_s(examples, seconds)},
            "train_loop_examples_per_s": round(summary["examples_per_second"], 1),
            "train_loop_seconds": round(summary["seconds"], 1),
            "steps": summary["steps"],
            "max_steps": summary["max_steps"],
            "stopped_early": summary["stopped_early"],
            "batch_size": config["batch_size"],
            "method": config["method"],
            "validations": num_validations,
            "validate_every": config["validate_every"],
            "best_validation_recall_at_50": summary.get("best_validation_recall@50"),
            "blend": summary.get("blend"),
            "train_flags": args.train_flags,
        }
    if stage == "evaluate":
        out = _json(paths.metrics)
        metrics, queries = out["metrics"], out["queries"]
        return {
            "throughput": {"queries_per_s": _per_s(queries["evaluated"], seconds)},
            "eval_queries": queries["evaluated"],
            "eval_queries_total": queries["of"],
            "eval_queries_sampled": queries["sampled"],
            "eval_pairs": metrics["all"]["num_pairs"],
            "recall_at_10": round(metrics["all"]["recall@10"], 4),
            "recall_at_50": round(metrics["all"]["recall@50"], 4),
            "recall_at_50_by_slice": {
                s: round(m["recall@50"], 4) for s, m in metrics.items() if s != "all"
            },
            "evaluate_own_seconds": out["seconds"],
        }
    if stage == "export":
        info_path = sorted(
            glob.glob(os.path.join(paths.export, "*", "export_info.json")),
            key=lambda p: int(os.path.basename(os.path.dirname(p))),
        )[-1]
        info = _json(info_path)
        return {
            "throughput": {"items_per_s": _per_s(info["num_items"], seconds)},
            "scann_recall_at_10": round(info["recall_at_10_vs_brute_force"], 4),
            "recall_sample": info["recall_sample"],
            "index_build_seconds": info["index_build_seconds"],
            "index_params": info["index_params"],
            "index_builds": len(info["index_tuning"]),
            "blend": info["blend"],
            "export_mb": _disk_mb(os.path.dirname(info_path)),
        }
    result = _json(paths.api)
    return {
        "throughput": {"queries_per_s": result["queries_per_s"]},
        **{k: v for k, v in result.items() if k != "queries_per_s"},
    }


# --- the API stage's child process ---------------------------------------------------------------


def api_child(
    export_dir: str,
    data_dir: str,
    num_queries: int,
    out: str,
    k: int = 10,
    batch: int = 100,
    latency_queries: int = 1000,
) -> None:
    """`num_queries` corpus items through the Python API in calls of `batch` ids (throughput),
    after the first `latency_queries` of them one per call (latency); writes `out` (JSON)."""
    # Keras 2 for TFRS (ssl_retrieval sets this too, but scann imports TensorFlow first here).
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.path.insert(0, ROOT)
    import numpy as np
    import scann  # noqa: F401  (ScaNN ops registered before any SavedModel holding them loads)

    import ssl_retrieval
    from ssl_retrieval import data as data_lib

    start = time.monotonic()
    model = ssl_retrieval.load(export_dir)
    load_s = time.monotonic() - start
    ids = data_lib.corpus_ids(data_dir)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(ids), size=num_queries, replace=num_queries > len(ids))
    queries = [ids[i] for i in picked]
    latencies = []
    for item in queries[:latency_queries]:
        t = time.perf_counter()
        model.similar([item], k=k)
        latencies.append(time.perf_counter() - t)
    short = 0
    start = time.monotonic()
    for lo in range(0, num_queries, batch):
        rows = model.similar(queries[lo : lo + batch], k=k)
        short += sum(len(row) < k for row in rows)
    query_s = time.monotonic() - start
    ms = np.array(latencies) * 1000
    result = {
        "queries": num_queries,
        "k": k,
        "batch": batch,
        "queries_per_s": _per_s(num_queries, query_s),
        "query_seconds": round(query_s, 2),
        "latency_queries": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "load_seconds": round(load_s, 2),
        "lists_shorter_than_k": int(short),
        "version": model.version,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(out + ".tmp", out)
    print(json.dumps(result))


# --- the run -------------------------------------------------------------------------------------


def recorded_lines(paths: Paths) -> dict:
    """stage -> its last recorded line in the work dir."""
    out = {}
    path = os.path.join(paths.work, RECORD)
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    out[record["stage"]] = record
    return out


def check_work_dir(args, paths: Paths) -> None:
    """A work dir holds one size of run: stages of another size are not reused."""
    wanted = {
        "num_items": args.num_items,
        "num_pairs": args.num_pairs,
        "format": args.format,
        "source_shards": args.source_shards,
    }
    path = os.path.join(paths.work, ARGS_FILE)
    if os.path.exists(path):
        held = _json(path)
        if held != wanted:
            raise SystemExit(
                f"error: {paths.work} holds a run with {held}, not {wanted}; use another "
                "--work_dir (or delete it)"
            )
    os.makedirs(paths.work, exist_ok=True)
    with open(path, "w") as f:
        json.dump(wanted, f)


def emit(line: dict, emitted: list) -> None:
    print(json.dumps(line), flush=True)
    emitted.append(line)


def write_out(path: str, lines: list) -> None:
    """Appends this run's lines to `path`, atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    previous = ""
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        if previous and not previous.endswith("\n"):
            previous += "\n"
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(previous + "".join(json.dumps(line) + "\n" for line in lines))
    os.replace(tmp, path)


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def commit() -> str | None:
    """The git commit of the code measured (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("+changes" if _dirty() else "")


def _dirty() -> bool:
    out = subprocess.run(
        # results/ aside: this bench appends to results/bench/scale.jsonl itself.
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        capture_output=True,
        text=True,
    )
    return bool(out.stdout.strip())


def run(args) -> int:
    paths = Paths(args.work_dir)
    check_work_dir(args, paths)
    selected = [s for s in STAGES if s in args.stages]
    recorded = recorded_lines(paths)
    emitted: list = []
    measured: dict = {}
    failed = None
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    common = {"items": args.num_items, "pairs": args.num_pairs, "run": run_id, "commit": commit()}
    try:
        for stage in selected:
            if paths.done(stage) and not args.force and not paths.stale(stage):
                line = recorded.get(stage)
                if line is None:
                    progress(f"{stage}: output exists, no recorded line: skipped")
                    emit({"figure": "scale", "stage": stage, "skipped": True, **common}, emitted)
                    continue
                progress(f"{stage}: output exists, reusing its line from {RECORD}")
                line = {**line, "reused": True}
                emit(line, emitted)
                measured[stage] = line
                continue
            need = NEEDS.get(stage)
            if need and not paths.done(need):
                raise SystemExit(f"error: {stage} needs the output of {need}; run that stage")
            output = paths.output(stage)
            if os.path.isdir(output):
                shutil.rmtree(output)  # a fresh measurement, never a resumed half
            argv = command(stage, args, paths)
            log_path = os.path.join(paths.work, "logs", f"{stage}.log")
            progress(f"{stage}: {shlex.join(argv)}  (log: {log_path})")
            result = run_measured(stage, argv, log_path)
            line = {
                "figure": "scale",
                "stage": stage,
                "seconds": result["seconds"],
                "peak_rss_gb": result["peak_rss_gb"],
                "ru_maxrss_gb": result["ru_maxrss_gb"],
                "max_processes": result["max_processes"],
                **common,
                "load_avg_1m": loadavg(),
            }
            if result["returncode"] != 0 or not paths.done(stage):
                tail = last_line(log_path, 300, count=3)
                progress(
                    f"{stage}: FAILED (exit {result['returncode']}) after "
                    f"{result['seconds']}s: {tail}  (log: {log_path})"
                )
                emit(
                    {**line, "failed": True, "returncode": result["returncode"], "error": tail},
                    emitted,
                )
                failed = stage
                break
            line.update(stage_figures(stage, args, paths, result["seconds"]))
            emit(line, emitted)
            measured[stage] = line
            with open(os.path.join(paths.work, RECORD), "a") as f:
                f.write(json.dumps(line) + "\n")
            progress(
                f"{stage}: {result['seconds']}s, peak RSS {result['peak_rss_gb']} GB, "
                f"{line['throughput']}"
            )
    finally:
        seconds = sum(line["seconds"] for line in measured.values())
        peak = max((line["peak_rss_gb"] for line in measured.values()), default=0.0)
        complete = all(s in measured for s in STAGES)
        total = {
            "figure": "scale_total",
            "seconds": round(seconds, 1),
            "minutes": round(seconds / 60, 1),
            "max_peak_rss_gb": peak,
            "stages": [s for s in STAGES if s in measured],
            "reused": [s for s in STAGES if measured.get(s, {}).get("reused")],
            "complete": complete,
            "goal_minutes": GOAL_MINUTES,
            "goal_gb": GOAL_GB,
            "meets_goals": complete and seconds < 60 * GOAL_MINUTES and peak < GOAL_GB,
            "cores": os.cpu_count(),
            **common,
        }
        if failed:
            total["failed_stage"] = failed
        emit(total, emitted)
        write_out(args.out, emitted)
        progress(f"wrote {len(emitted)} lines to {args.out}")
    return 1 if failed else 0


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and each flag's default."""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--num_items", type=int, default=1_000_000, help="Synthetic items.")
    parser.add_argument("--num_pairs", type=int, default=10_000_000, help="Synthetic pairs.")
    parser.add_argument(
        "--work_dir", default="runs/scale", help="Where every stage writes (and is resumed from)."
    )
    parser.add_argument(
        "--out", default="results/bench/scale.jsonl", help="JSON Lines file this run appends to."
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"Comma list of the stages to run, of {','.join(STAGES)} (run in that order).",
    )
    parser.add_argument(
        "--force", action="store_true", help="Run the selected stages even if their output exists."
    )
    parser.add_argument(
        "--format",
        default="parquet",
        choices=("jsonl", "parquet", "csv"),
        help="Raw file format. Parquet: the job splits it by row group, where a line format is "
        "read one worker per file (results/bench/preprocess_read.json: 6x faster than JSON Lines).",
    )
    parser.add_argument(
        "--source_shards", type=int, default=8, help="Shards per raw file kind (items, pairs)."
    )
    parser.add_argument(
        "--eval_queries",
        type=int,
        default=10_000,
        help="Eval queries evaluated: a fixed random sample (evaluate --max_queries); 0 = all.",
    )
    parser.add_argument(
        "--api_queries", type=int, default=10_000, help="Queries through the Python API."
    )
    parser.add_argument(
        "--api_batch", type=int, default=100, help="Item ids per call of the API's throughput pass."
    )
    parser.add_argument(
        "--train_flags",
        default="",
        help="Extra flags for ssl_retrieval.train, spaced; none = the default recipe.",
    )
    parser.add_argument(
        "--preprocess_flags", default="", help="Extra flags for pipelines.preprocess, spaced."
    )
    parser.add_argument("--api_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The stages run in the repository root (`python -m pipelines.preprocess`); paths are the
    # caller's.
    args.work_dir, args.out = os.path.abspath(args.work_dir), os.path.abspath(args.out)
    if args.api_child:
        api_child(args.api_child, args.data_dir, args.api_queries, args.out, batch=args.api_batch)
        return 0
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown or not args.stages:
        parser.error(f"--stages: unknown {unknown}; choose from {','.join(STAGES)}")
    if (
        min(args.num_items, args.num_pairs, args.source_shards, args.api_queries, args.api_batch)
        < 1
    ):
        parser.error(
            "--num_items, --num_pairs, --source_shards, --api_queries, --api_batch must be >= 1"
        )
    if args.eval_queries < 0:
        parser.error("--eval_queries must be >= 0 (0 = all)")
    # A TERM (a scheduler, `timeout`) unwinds like Ctrl-C: the running stage's tree is ended.
    signal.signal(signal.SIGTERM, _terminate)
    progress(
        f"{args.num_items} items, {args.num_pairs} pairs, stages {','.join(args.stages)} "
        f"in {args.work_dir} (load average {loadavg():.1f} on {os.cpu_count()} cores)"
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
