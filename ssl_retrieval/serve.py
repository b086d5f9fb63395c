r"""Serves an export over HTTP: TF Serving's REST shape plus /v1/similar/<item_id>.

  python -m ssl_retrieval.serve --export_dir=runs/demo/export --port=8501
  curl 'http://127.0.0.1:8501/v1/similar/vim?k=5'
  curl -d '{"instances": ["vim"], "k": 5}' http://127.0.0.1:8501/v1/models/ssl_retrieval:predict
  open http://127.0.0.1:8501/?item=vim   (the browser page; --compare_export_dir adds a 2nd model)

Binds to loopback unless --host says otherwise; picks up newer versions in --export_dir without
a restart. Endpoints and error codes: ssl_retrieval/http_app.py.
"""

import logging
import sys

from absl import app, flags

EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Export dir (versions inside) or one version.")
COMPARE_EXPORT_DIR = flags.DEFINE_string(
    "compare_export_dir", None, "A second export the page at / shows side by side (optional)."
)
HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind (default: loopback only).")
PORT = flags.DEFINE_integer("port", 8501, "TCP port.")
MODEL_NAME = flags.DEFINE_string("model_name", "ssl_retrieval", "Name in /v1/models/<name>.")
MAX_REQUEST_BYTES = flags.DEFINE_integer("max_request_bytes", 1 << 20, "Larger bodies get 413.")
POLL_SECONDS = flags.DEFINE_float(
    "poll_seconds", 30.0, "Seconds between checks for a newer version (0: never)."
)
WORKERS_THREADS = flags.DEFINE_integer("threads", 16, "Threads running model calls.")

flags.mark_flag_as_required("export_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    import anyio.to_thread  # noqa: PLC0415
    import uvicorn  # noqa: PLC0415

    from ssl_retrieval import http_app  # noqa: PLC0415  (imports TensorFlow)

    try:
        application = http_app.create_app(
            EXPORT_DIR.value,
            MODEL_NAME.value,
            MAX_REQUEST_BYTES.value,
            POLL_SECONDS.value,
            compare_export_dir=COMPARE_EXPORT_DIR.value,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)

    async def set_threads():
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKERS_THREADS.value

    application.router.on_startup.append(set_threads)
    uvicorn.run(application, host=HOST.value, port=PORT.value, log_level="warning")


if __name__ == "__main__":
    app.run(main)
