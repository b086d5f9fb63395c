"""The HTTP app (FastAPI): TF Serving's REST shape plus a friendly similar-items endpoint.

  GET  /healthz                         {"status": "ok", "version": N, "directory": <its name>}
  GET  /v1/models/<name>                TF Serving model status (version, state AVAILABLE)
  POST /v1/models/<name>:predict        {"signature_name": "similar_items" (default) |
                                          "similar_items_by_features" | "item_embedding",
                                          "instances": [...], "k": 10}
       similar_items instances: item ids ("vim") or {"item_id": "vim"};
       the other two: feature objects ({"section": "editors", "tags": ["use::editing"], ...}).
       -> {"predictions": [{"ids": [...], "scores": [...], "sources": [...],
           "source_scores": [...]}, ...]} or [[embedding], ...]
  GET  /v1/similar/<item_id>?k=10       {"item_id", "version", "neighbors": [{"rank", "id",
                                          "score", "source", "source_score"}]}
       "scores"/"score": the list's own rank score (never rising down a list); "sources": the
       ranking that listed each item, "source_scores" its own score (`api.Neighbour`).
  GET  /                                 the browser page and its /page/... endpoints (page.py)
  GET  /openapi.json                     only with `openapi=True` (--openapi); never /docs

Every error, the framework's and the HTTP parser's included, is JSON {"error": message}: 400
bad request, 404 unknown model, method or item, 405 wrong HTTP method, 408 body not received
within the read timeout, 413 body or work over a limit (the message names the flag), 503 more
queries queued than `--max_queued_queries` (with Retry-After). Limits (`Limits`): body size,
body read time, instances per request, instances x k, queued queries, and for the feature
signatures instances and feature values per instance. Connections are bounded by
`transport.py` (header timeout, connection cap). HEAD is answered like GET without a body;
a path with a stray trailing slash is redirected (307) to the route, with a relative Location.

Batching (`batching.Batcher`): similar_items queries of concurrent requests (both endpoints)
share index calls, smallest requests first, so a single query is not kept waiting behind a
large request; the work of a client that disconnected is dropped before it runs.

Versions (`holder.ModelHolder`): a background thread follows the export directory.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from ssl_retrieval.serving import api, page
from ssl_retrieval.serving import requests as requests_lib
from ssl_retrieval.serving.batching import Backlog, Batcher, Busy
from ssl_retrieval.serving.config import MAX_INSTANCES, Limits  # noqa: F401  (re-exported)
from ssl_retrieval.serving.headers import SecurityHeaders
from ssl_retrieval.serving.holder import ModelHolder
from ssl_retrieval.serving.requests import HttpError

__all__ = ["Batcher", "HttpError", "Limits", "ModelHolder", "create_app"]


def _error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _slash_redirect(app: FastAPI, request: Request) -> RedirectResponse | None:
    """A 307 to the same path without (or with) its trailing slash if a route takes that one.

    Starlette's own redirect puts the request's Host header into an absolute Location (a
    `Host: evil.example` was echoed back); this one is relative, and never `//host`-like.
    """
    path = request.scope["path"]
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    if not other or other.startswith("//") or "\\" in other:
        return None
    scope = {**request.scope, "path": other}
    if not any(route.matches(scope)[0] != Match.NONE for route in app.router.routes):
        return None
    location = urllib.parse.quote(other, safe="/:@!$&'()*+,;=-._~")
    if request.url.query:
        location += "?" + request.url.query
    return RedirectResponse(location, status_code=307)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HttpError)
    async def http_error(_, error: HttpError):
        return _error_response(error.status, error.message, error.headers)

    @app.exception_handler(Busy)
    async def busy(_, error: Busy):
        return _error_response(503, str(error), {"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 404:
            redirect = _slash_redirect(app, request)
            if redirect is not None:
                return redirect
        return _error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_, error: RequestValidationError):
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors()
        )
        return _error_response(400, details or "invalid request")

    @app.exception_handler(Exception)
    async def internal_error(_, error: Exception):
        logging.error("serve: internal error", exc_info=error)
        return _error_response(500, f"internal error ({type(error).__name__}); see the server log")


def _add_rest_routes(app: FastAPI, model_name: str) -> None:
    """/healthz, /v1/models/<name>[:predict] and /v1/similar/<id> over `app.state`."""
    holder, batcher, backlog = app.state.holder, app.state.batcher, app.state.backlog
    limits: Limits = app.state.limits

    def check_name(name: str) -> None:
        if name != model_name:
            raise HttpError(
                404,
                f"unknown model {api.short_repr(name)}; this server serves {model_name!r}",
            )

    def split_verb(name_and_verb: str) -> str:
        name, _, verb = name_and_verb.rpartition(":")
        if verb != "predict":
            raise HttpError(
                404,
                f"unknown method {api.short_repr(verb)}; use /v1/models/{model_name}:predict",
            )
        check_name(name)
        return name

    @app.get("/healthz")
    def health():
        model = holder.model
        # The directory's name, not its path: the server's file system is nobody's business.
        return {"status": "ok", "version": model.version, "directory": model.directory}

    @app.get("/v1/models/{name}")
    def status(name: str):
        if ":" in name:
            split_verb(name)
            raise HttpError(405, "use POST for :predict", {"Allow": "POST"})
        check_name(name)
        return {
            "model_version_status": [
                {
                    "version": str(holder.model.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    async def predict(request: Request):
        split_verb(request.path_params["name_and_verb"])
        raw = await requests_lib.read_body(
            request, limits.max_request_bytes, limits.body_timeout_seconds
        )
        body = requests_lib.parse_json(raw)
        model = holder.model
        signature, instances, k = requests_lib.validate(model, body, limits)
        with backlog.admit(len(instances)):
            if signature != "similar_items":
                work = run_in_threadpool(requests_lib.run_features, model, signature, instances, k)
                return JSONResponse(await requests_lib.unless_client_leaves(request, work))
            work = batcher.similar(instances, k)
            try:
                _, rows = await (
                    requests_lib.unless_client_leaves(request, work) if len(instances) > 1 else work
                )
            except api.UnknownItemError as e:
                raise HttpError(404, str(e)) from None
        return JSONResponse(requests_lib.rows_json(rows))

    async def similar(request: Request):
        model = holder.model
        k = requests_lib.parse_k(request.query_params.get("k", "10"), model.max_k)
        (item_id,) = requests_lib.check_ids([request.path_params["item_id"]])
        try:
            served, (row,) = await batcher.similar([item_id], k)
        except api.UnknownItemError as e:
            raise HttpError(404, str(e)) from None
        return JSONResponse(
            {
                "item_id": item_id,
                "version": served.version,
                "neighbors": [
                    {"rank": rank, **neighbour._asdict()} for rank, neighbour in enumerate(row, 1)
                ],
            }
        )

    # Plain routes: FastAPI's parameter machinery is ~10% of a similar request, and would be
    # most of the event loop's time for a burst of predict requests it then refuses.
    app.router.routes.append(Route("/v1/models/{name_and_verb}", predict, methods=["POST"]))
    app.router.routes.append(Route("/v1/similar/{item_id:path}", similar, methods=["GET"]))


def create_app(
    export_dir: str,
    model_name: str = "ssl_retrieval",
    max_request_bytes: int = 1 << 20,
    poll_seconds: float = 30.0,
    compare_export_dir: str | None = None,
    limits: Limits | None = None,
    openapi: bool = False,
) -> FastAPI:
    """The FastAPI app serving the newest version under `export_dir` that loads.

    `limits` (default `Limits()`) bounds each request; `max_request_bytes` overrides its body
    size. `openapi` serves the schema at /openapi.json (FastAPI's /docs and /redoc, which load
    scripts from a CDN, are never served). The app's state holds the `ModelHolder`
    (`app.state.holder`), so other routers can be included and serve the same model.
    """
    limits = dataclasses.replace(limits or Limits(), max_request_bytes=max_request_bytes)
    limits.validate()
    holder = ModelHolder(export_dir, poll_seconds)
    compare = ModelHolder(compare_export_dir, poll_seconds) if compare_export_dir else None
    batcher = Batcher(holder, limits.batch_window_ms / 1000.0, limits.max_batch)
    app = FastAPI(
        title="ssl_retrieval",
        on_startup=[holder.start],
        on_shutdown=[holder.stop, batcher.stop],
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if openapi else None,
        redirect_slashes=False,  # _slash_redirect instead: relative, no Host echo
    )
    app.state.holder = holder
    app.state.batcher = batcher
    app.state.backlog = Backlog(limits.max_queued_queries)
    app.state.limits = limits
    _install_error_handlers(app)
    _add_rest_routes(app, model_name)
    app.include_router(page.router(holder, compare, limits))
    app.add_middleware(SecurityHeaders)
    return app
