r"""Serves an export over HTTP: TF Serving's REST shape plus /v1/similar/<item_id>.

  python -m ssl_retrieval.serve --export_dir=runs/demo/export --port=8501
  curl 'http://127.0.0.1:8501/v1/similar/vim?k=5'
  curl -d '{"instances": ["vim"], "k": 5}' http://127.0.0.1:8501/v1/models/ssl_retrieval:predict
  open http://127.0.0.1:8501/?item=vim   (the browser page; --compare_export_dir adds a 2nd model)

Binds to loopback unless --host says otherwise. Starts on the newest version in --export_dir that
loads (one log line says why newer ones were skipped), follows the directory without a restart
(newer versions, and back to the newest remaining one when the served one is deleted), and
bounds what one request may cost (the limit flags below; 413 names the flag). Endpoints and
error codes: ssl_retrieval/serving/http_app.py.
"""

import logging

from absl import app, flags

from ssl_retrieval import cli

EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Export dir (versions inside) or one version.")
COMPARE_EXPORT_DIR = flags.DEFINE_string(
    "compare_export_dir", None, "A second export the page at / shows side by side (optional)."
)
HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind (default: loopback only).")
PORT = flags.DEFINE_integer("port", 8501, "TCP port.")
MODEL_NAME = flags.DEFINE_string("model_name", "ssl_retrieval", "Name in /v1/models/<name>.")
MAX_REQUEST_BYTES = flags.DEFINE_integer("max_request_bytes", 1 << 20, "Larger bodies get 413.")
BODY_TIMEOUT = flags.DEFINE_float(
    "body_timeout_seconds",
    10.0,
    "A request body not received in full within this many seconds gets 408 and the connection "
    "is closed (slow or stalled clients).",
)
MAX_INSTANCES = flags.DEFINE_integer("max_instances", 1000, "Instances per predict request.")
MAX_RESULTS = flags.DEFINE_integer(
    "max_results", 10_000, "Instances x k per similar-items request (413 above)."
)
MAX_FEATURE_INSTANCES = flags.DEFINE_integer(
    "max_feature_instances",
    100,
    "Instances per similar_items_by_features / item_embedding request (they run the towers).",
)
MAX_FEATURE_VALUES = flags.DEFINE_integer(
    "max_feature_values", 256, "Feature values in one instance (each multi-hot value counts)."
)
BATCH_WINDOW_MS = flags.DEFINE_float(
    "batch_window_ms",
    0.0,
    "How long a similar-items query may wait for others to share one index call. 0: no wait; "
    "the queries that arrived while the previous call ran form the next batch.",
)
MAX_BATCH = flags.DEFINE_integer("max_batch", 256, "Most queries in one batched index call.")
POLL_SECONDS = flags.DEFINE_float(
    "poll_seconds", 30.0, "Seconds between checks of --export_dir for versions (0: never)."
)
WORKERS_THREADS = flags.DEFINE_integer("threads", 16, "Threads running model calls.")

flags.mark_flag_as_required("export_dir")


def _serve() -> None:
    import anyio.to_thread  # noqa: PLC0415
    import uvicorn  # noqa: PLC0415

    from ssl_retrieval.serving import http_app  # noqa: PLC0415  (imports TensorFlow)

    limits = http_app.Limits(
        max_request_bytes=MAX_REQUEST_BYTES.value,
        body_timeout_seconds=BODY_TIMEOUT.value,
        max_instances=MAX_INSTANCES.value,
        max_results=MAX_RESULTS.value,
        max_feature_instances=MAX_FEATURE_INSTANCES.value,
        max_feature_values=MAX_FEATURE_VALUES.value,
        batch_window_ms=BATCH_WINDOW_MS.value,
        max_batch=MAX_BATCH.value,
    ).validate()
    application = http_app.create_app(
        EXPORT_DIR.value,
        MODEL_NAME.value,
        MAX_REQUEST_BYTES.value,
        POLL_SECONDS.value,
        compare_export_dir=COMPARE_EXPORT_DIR.value,
        limits=limits,
    )

    async def set_threads():
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKERS_THREADS.value

    application.router.on_startup.append(set_threads)
    logging.info(
        "serve: version %d on http://%s:%d",
        application.state.holder.model.version,
        HOST.value,
        PORT.value,
    )
    uvicorn.run(application, host=HOST.value, port=PORT.value, log_level="warning")


main = cli.main(_serve)

if __name__ == "__main__":
    app.run(main)
