"""The HTTP app (FastAPI): TF Serving's REST shape plus a friendly similar-items endpoint.

  GET  /healthz                         {"status": "ok", "version": N, "path": <version dir>}
  GET  /v1/models/<name>                TF Serving model status (version, state AVAILABLE)
  POST /v1/models/<name>:predict        {"signature_name": "similar_items" (default) |
                                          "similar_items_by_features" | "item_embedding",
                                          "instances": [...], "k": 10}
       similar_items instances: item ids ("vim") or {"item_id": "vim"};
       the other two: feature objects ({"section": "editors", "tags": ["use::editing"], ...}).
       -> {"predictions": [{"ids": [...], "scores": [...]}, ...]} or [[embedding], ...]
  GET  /v1/similar/<item_id>?k=10       {"item_id", "version", "neighbors": [{"id", "score"}]}
  GET  /                                 the browser page and its /page/... endpoints (page.py)

Every error, the framework's included, is JSON {"error": message}: 400 bad request, 404 unknown
model, method or item, 405 wrong HTTP method, 408 body not received within the read timeout, 413
body or work over a limit (the message names the flag). Limits (`Limits`): body size, body read
time, instances per request, instances x k, and for the feature signatures instances and
feature values per instance.

Batching: similar_items queries of concurrent requests (both endpoints) are gathered into one
call of the index, like TF Serving's batching: the first query waits at most `batch_window_ms`
for others, and queries arriving while a batch runs form the next one. Answers are the same as
one call per query (the index always searches max_k + 1 and each answer keeps its first k).

Versions: a background thread polls the export directory (the version is the directory name, see
`ssl_retrieval.serving.api`): it loads a newer version once, falls back to the newest remaining one
when the served directory disappears, skips incomplete or broken versions with one log line each
(retried only when their files change), and the previous model is freed once its last request
ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from ssl_retrieval.serving import api
from ssl_retrieval.serving.config import MAX_INSTANCES, Limits  # noqa: F401  (re-exported)

DEFAULT_LIMITS = Limits()

SIGNATURES = ("similar_items", "similar_items_by_features", "item_embedding")
_K_TEXT = re.compile(r"[+-]?[0-9]{1,18}")  # ASCII digits only: "²".isdigit() is True


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ModelHolder:
    """The model being served, and the following of the export directory."""

    def __init__(self, export_dir: str, poll_seconds: float = 30.0):
        self.export_dir = export_dir
        self.poll_seconds = poll_seconds
        self.model = api.load(export_dir)
        self._single = api.is_version_dir(export_dir)  # one version given: nothing to follow
        self._failed: dict[int, tuple] = {}  # version -> fingerprint of its failed load
        self._lock = threading.Lock()
        self._warned_gone = None
        self._stop = threading.Event()
        self._thread = None

    def poll_once(self) -> bool:
        """Serves the newest version that loads if it is not the one served; True if swapped.

        The served version stays while its directory is intact and nothing newer loads. When
        its directory is gone (or its files replaced) the newest remaining version that loads
        is served; if none does, the model in memory keeps serving, with a warning.
        """
        if self._single:
            return False
        with self._lock:
            current = self.model
            intact = api.fingerprint(current.path) == current.fingerprint
            present = api.version_dirs(self.export_dir)
            self._failed = {v: fp for v, fp in self._failed.items() if v in present}
            for version in reversed(present):
                if intact and version <= current.version:
                    return False
                path = os.path.join(self.export_dir, str(version))
                fp = api.fingerprint(path)
                if self._failed.get(version) == fp:
                    continue
                try:
                    new = api.SimilarItems(path)
                except api.BrokenVersionError as e:
                    self._failed[version] = fp
                    logging.warning("serve: skipping version %d: %s", version, e)
                    continue
                self.model = new
                logging.warning(
                    "serve: now serving version %d (was %d%s)",
                    new.version,
                    current.version,
                    "" if intact else ", whose directory is gone or changed",
                )
                self._warned_gone = None
                return True
            if not intact and self._warned_gone != current.path:
                self._warned_gone = current.path
                logging.warning(
                    "serve: %s is gone or changed and no other version loads; still serving "
                    "version %d from memory",
                    current.path,
                    current.version,
                )
            return False

    def start(self) -> None:
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001  (the poller must outlive any one failure)
                logging.exception("serve: polling %s failed", self.export_dir)


class _Pending:
    __slots__ = ("future", "ids", "k")

    def __init__(self, ids, k, future):
        self.ids, self.k, self.future = ids, k, future


class Batcher:
    """Gathers the similar_items queries of concurrent requests into one model call."""

    def __init__(self, holder: ModelHolder, window_seconds: float = 0.001, max_batch: int = 256):
        self.holder = holder
        self.window = window_seconds
        self.max_batch = max_batch
        self._queue = None
        self._loop = None
        self._task = None

    async def similar(self, ids: list[str], k: int):
        """(model, rows) for `ids` (validated strings), or raises UnknownItemError."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue))
        future = loop.create_future()
        self._queue.put_nowait(_Pending(ids, k, future))
        return await future

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = self._loop = None

    async def _gather(self, queue) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        size = len(batch[0].ids)
        deadline = loop.time() + self.window
        while size < self.max_batch:
            if queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = queue.get_nowait()
            batch.append(item)
            size += len(item.ids)
        return [p for p in batch if not p.future.done()]  # done: the client went away

    async def _run(self, queue) -> None:
        while True:
            batch = await self._gather(queue)
            if not batch:
                continue
            model = self.holder.model
            ids = [i for p in batch for i in p.ids]
            k = min(max(p.k for p in batch), model.max_k)
            try:
                rows, found = await run_in_threadpool(model.similar_rows, ids, k)
            except Exception as e:  # noqa: BLE001  (handed to each request, the loop goes on)
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            start = 0
            for p in batch:
                n = len(p.ids)
                part, ok = rows[start : start + n], found[start : start + n]
                start += n
                if p.future.done():
                    continue
                if not ok.all():
                    missing = [i for i, hit in zip(p.ids, ok, strict=True) if not hit]
                    p.future.set_exception(api.UnknownItemError(missing))
                else:
                    p.future.set_result((model, [row[: p.k] for row in part]))


def _parse_k(value, max_k: int) -> int:
    if isinstance(value, str):
        if not _K_TEXT.fullmatch(value.strip()):
            raise HttpError(400, f"k must be an integer, got {api.short_repr(value)}")
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"k must be an integer, got {api.short_repr(value)}")
    if not 1 <= value <= max_k:
        raise HttpError(400, f"k must be between 1 and {max_k}, got {api.short_repr(value)}")
    return value


def _check_ids(instances) -> list[str]:
    ids = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            instance = instance.get("item_id")
        if not isinstance(instance, str):
            raise HttpError(
                400, f"instances[{i}]: expected an item id string or {{'item_id': ...}}"
            )
        ids.append(instance)
    try:
        api.encode_ids(ids)
    except ValueError as e:
        raise HttpError(400, str(e).replace("item_ids[", "instances[")) from None
    return ids


def _validate(model: api.SimilarItems, body, limits: Limits):
    """(signature, instances or ids, k) of a predict body; HttpError 400/413 naming the problem."""
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object with 'instances'")
    signature = body.get("signature_name", "similar_items")
    if signature not in SIGNATURES:
        raise HttpError(
            400,
            f"unknown signature_name {api.short_repr(signature)}; one of {list(SIGNATURES)}",
        )
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise HttpError(400, "'instances' must be a non-empty list")
    n = len(instances)
    if n > limits.max_instances:
        raise HttpError(
            413,
            f"at most {limits.max_instances} instances per request (--max_instances), got {n}",
        )
    k = _parse_k(body.get("k", 10), model.max_k)
    if signature != "item_embedding" and n * k > limits.max_results:
        raise HttpError(
            413,
            f"instances x k = {n} x {k} = {n * k} exceeds the limit of "
            f"--max_results={limits.max_results}; send fewer instances or a smaller k",
        )
    if signature == "similar_items":
        return signature, _check_ids(instances), k
    if n > limits.max_feature_instances:
        raise HttpError(
            413,
            f"at most {limits.max_feature_instances} instances per {signature} request "
            f"(--max_feature_instances), got {n}",
        )
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            values = sum(len(v) if isinstance(v, list) else 1 for v in instance.values())
            if values > limits.max_feature_values:
                raise HttpError(
                    413,
                    f"instances[{i}]: {values} feature values exceed the limit of "
                    f"--max_feature_values={limits.max_feature_values}",
                )
    return signature, instances, k


def _rows_json(rows) -> dict:
    return {
        "predictions": [{"ids": [i for i, _ in row], "scores": [s for _, s in row]} for row in rows]
    }


def _run_features(model: api.SimilarItems, signature: str, instances, k: int) -> dict:
    try:
        if signature == "similar_items_by_features":
            return _rows_json(model.similar_by_features(instances, k))
        return {"predictions": model.embed(instances).tolist()}
    except ValueError as e:
        raise HttpError(400, str(e)) from None


def _predict(model: api.SimilarItems, body, limits: Limits = DEFAULT_LIMITS) -> dict:
    """One predict body answered in the calling thread (no batching)."""
    signature, instances, k = _validate(model, body, limits)
    if signature != "similar_items":
        return _run_features(model, signature, instances, k)
    try:
        return _rows_json(model.similar(instances, k))
    except api.UnknownItemError as e:
        raise HttpError(404, str(e)) from None
    except ValueError as e:
        raise HttpError(400, str(e)) from None


async def _read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The body, at most `limit` bytes, all of it within `timeout` seconds (else 413 / 408)."""
    close = {"Connection": "close"}  # the rest of the body is not read: no keep-alive
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise HttpError(
            413,
            f"request body of {length} bytes exceeds the limit of {limit} (--max_request_bytes)",
            close,
        )
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HttpError(
                        413,
                        f"request body exceeds the limit of {limit} bytes (--max_request_bytes)",
                        close,
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(
            408,
            f"the request body did not arrive within {timeout:g} s (--body_timeout_seconds)",
            close,
        ) from None
    except ClientDisconnect:
        raise HttpError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def _parse_json(raw: bytes):
    try:
        return json.loads(raw)
    except RecursionError:
        raise HttpError(400, "the body is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, integers over 4,300 digits
        raise HttpError(400, f"the body is not valid JSON: {api.short_repr(str(e))}") from None


def create_app(
    export_dir: str,
    model_name: str = "ssl_retrieval",
    max_request_bytes: int = 1 << 20,
    poll_seconds: float = 30.0,
    compare_export_dir: str | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The FastAPI app serving the newest version under `export_dir` that loads.

    `limits` (default `Limits()`) bounds each request; `max_request_bytes` overrides its body
    size. The app's state holds the `ModelHolder` (`app.state.holder`), so other routers can
    be included and serve the same model.
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
    )
    app.state.holder = holder
    app.state.batcher = batcher
    app.state.limits = limits

    @app.exception_handler(HttpError)
    async def http_error(_, error: HttpError):
        return _error_response(error.status, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(_, error: StarletteHTTPException):
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
        return {"status": "ok", "version": model.version, "path": model.path}

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

    @app.post("/v1/models/{name_and_verb}")
    async def predict(name_and_verb: str, request: Request):
        split_verb(name_and_verb)
        raw = await _read_body(request, limits.max_request_bytes, limits.body_timeout_seconds)
        body = _parse_json(raw)
        model = holder.model
        signature, instances, k = _validate(model, body, limits)
        if signature != "similar_items":
            return JSONResponse(
                await run_in_threadpool(_run_features, model, signature, instances, k)
            )
        try:
            _, rows = await batcher.similar(instances, k)
        except api.UnknownItemError as e:
            raise HttpError(404, str(e)) from None
        return JSONResponse(_rows_json(rows))

    async def similar(request: Request):
        model = holder.model
        k = _parse_k(request.query_params.get("k", "10"), model.max_k)
        (item_id,) = _check_ids([request.path_params["item_id"]])
        try:
            served, (row,) = await batcher.similar([item_id], k)
        except api.UnknownItemError as e:
            raise HttpError(404, str(e)) from None
        return JSONResponse(
            {
                "item_id": item_id,
                "version": served.version,
                "neighbors": [{"id": i, "score": s} for i, s in row],
            }
        )

    # The hottest endpoint as a plain route: FastAPI's parameter machinery is ~10% of a request.
    app.router.routes.append(Route("/v1/similar/{item_id:path}", similar, methods=["GET"]))

    from ssl_retrieval.serving import page  # noqa: PLC0415  (page imports this module)

    app.include_router(page.router(holder, compare))
    return app
