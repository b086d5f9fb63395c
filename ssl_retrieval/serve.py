r"""Serves an export over HTTP: TF Serving's REST shape plus /v1/similar/<item_id>.

  python -m ssl_retrieval.serve --export_dir=runs/demo/export --port=8501
  curl 'http://127.0.0.1:8501/v1/similar/vim?k=5'
  curl -d '{"instances": ["vim"], "k": 5}' http://127.0.0.1:8501/v1/models/ssl_retrieval:predict
  open http://127.0.0.1:8501/?item=vim   (the browser page; --compare_export_dir adds a 2nd model)

Binds to loopback unless --host says otherwise. Starts on the newest version in --export_dir that
loads (one log line says why newer ones were skipped), follows the directory without a restart
(newer versions, and back to the newest remaining one when the served one is deleted), bounds
what one request may cost (the limit flags below; 413 names the flag) and what one connection
may hold (--header_timeout_seconds, --keep_alive_seconds, --max_connections). Endpoints and
error codes: ssl_retrieval/serving/http_app.py; connections: ssl_retrieval/serving/transport.py.
"""

import logging

from absl import app

from ssl_retrieval import cli
from ssl_retrieval.serving.config import Connections, Limits, ServeConfig

# One flag per field of ServeConfig, Limits and Connections, from the dataclasses.
FLAGS = cli.define_flags(ServeConfig, required=("export_dir",))
LIMIT_FLAGS = cli.define_flags(Limits)
CONNECTION_FLAGS = cli.define_flags(Connections)


def _serve() -> None:
    import anyio.to_thread  # noqa: PLC0415

    from ssl_retrieval.serving import http_app, transport  # noqa: PLC0415  (imports TensorFlow)

    config = cli.from_flags(ServeConfig, FLAGS)
    limits = cli.from_flags(Limits, LIMIT_FLAGS).validate()
    connections = cli.from_flags(Connections, CONNECTION_FLAGS).validate()
    application = http_app.create_app(
        config.export_dir,
        config.model_name,
        limits.max_request_bytes,
        config.poll_seconds,
        compare_export_dir=config.compare_export_dir,
        limits=limits,
        openapi=config.openapi,
    )

    async def set_threads():
        anyio.to_thread.current_default_thread_limiter().total_tokens = config.threads

    application.router.on_startup.append(set_threads)
    logging.info(
        "serve: version %d on http://%s:%d",
        application.state.holder.model.version,
        config.host,
        config.port,
    )
    transport.run(application, connections, config.host, config.port)


main = cli.main(_serve)

if __name__ == "__main__":
    app.run(main)
