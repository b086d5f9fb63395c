"""The HTTP app (FastAPI): TF Serving's REST shape plus a friendly similar-items endpoint.

  GET  /healthz                         {"status": "ok", "version": N}
  GET  /v1/models/<name>                TF Serving model status (version, state AVAILABLE)
  POST /v1/models/<name>:predict        {"signature_name": "similar_items" (default) |
                                          "similar_items_by_features" | "item_embedding",
                                          "instances": [...], "k": 10}
       similar_items instances: item ids ("vim") or {"item_id": "vim"};
       the other two: feature objects ({"section": "editors", "tags": ["use::editing"], ...}).
       -> {"predictions": [{"ids": [...], "scores": [...]}, ...]} or [[embedding], ...]
  GET  /v1/similar/<item_id>?k=10       {"item_id", "version", "neighbors": [{"id", "score"}]}
  GET  /                                 the browser page and its /page/... endpoints (page.py)

Errors are JSON {"error": message}: 400 bad request, 404 unknown model or item, 413 body too
large. A background thread polls the export directory and swaps in a newer version once it has
fully loaded; the old one keeps serving if loading fails.
"""

from __future__ import annotations

import json
import logging
import threading

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ssl_retrieval import serving

SIGNATURES = ("similar_items", "similar_items_by_features", "item_embedding")
MAX_INSTANCES = 1000


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ModelHolder:
    """The model being served, and the reloading of newer versions."""

    def __init__(self, export_dir: str, poll_seconds: float = 30.0):
        self.export_dir = export_dir
        self.poll_seconds = poll_seconds
        self.model = serving.load(export_dir)
        self._stop = threading.Event()
        self._thread = None

    def poll_once(self) -> bool:
        """Loads a newer version if there is one; True if it was swapped in."""
        found = serving.versions(self.export_dir)
        if not found or found[-1] <= self.model.version:
            return False
        try:
            new = serving.SimilarItems(serving.resolve(self.export_dir))
        except Exception:  # noqa: BLE001  (any failure keeps the current version serving)
            logging.exception(
                "serve: loading version %s failed; keeping %s", found[-1], self.model.version
            )
            return False
        self.model = new
        logging.info("serve: now serving version %s", new.version)
        return True

    def start(self) -> None:
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll_once()


def _parse_k(value, max_k: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"k must be an integer, got {value!r}")
    if not 1 <= value <= max_k:
        raise HttpError(400, f"k must be between 1 and {max_k}, got {value}")
    return value


def _predict(model: serving.SimilarItems, body) -> dict:
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object with 'instances'")
    signature = body.get("signature_name", "similar_items")
    if signature not in SIGNATURES:
        raise HttpError(400, f"unknown signature_name {signature!r}; one of {list(SIGNATURES)}")
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise HttpError(400, "'instances' must be a non-empty list")
    if len(instances) > MAX_INSTANCES:
        raise HttpError(413, f"at most {MAX_INSTANCES} instances per request, got {len(instances)}")
    k = _parse_k(body.get("k", 10), model.max_k)
    try:
        if signature == "similar_items":
            ids = []
            for i, instance in enumerate(instances):
                if isinstance(instance, dict):
                    instance = instance.get("item_id")
                if not isinstance(instance, str):
                    raise HttpError(
                        400, f"instances[{i}]: expected an item id string or {{'item_id': ...}}"
                    )
                ids.append(instance)
            results = model.similar(ids, k)
        elif signature == "similar_items_by_features":
            results = model.similar_by_features(instances, k)
        else:
            return {"predictions": model.embed(instances).tolist()}
    except serving.UnknownItemError as e:
        raise HttpError(404, str(e)) from None
    except ValueError as e:
        raise HttpError(400, str(e)) from None
    return {
        "predictions": [
            {"ids": [i for i, _ in row], "scores": [s for _, s in row]} for row in results
        ]
    }


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HttpError(413, f"request body of {length} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    export_dir: str,
    model_name: str = "ssl_retrieval",
    max_request_bytes: int = 1 << 20,
    poll_seconds: float = 30.0,
    compare_export_dir: str | None = None,
) -> FastAPI:
    """The FastAPI app serving the newest version under `export_dir`."""
    holder = ModelHolder(export_dir, poll_seconds)
    compare = ModelHolder(compare_export_dir, poll_seconds) if compare_export_dir else None
    app = FastAPI(title="ssl_retrieval", on_startup=[holder.start], on_shutdown=[holder.stop])
    app.state.holder = holder

    @app.exception_handler(HttpError)
    async def http_error(_, error: HttpError):
        return JSONResponse({"error": error.message}, status_code=error.status)

    def check_name(name: str) -> None:
        if name != model_name:
            raise HttpError(404, f"unknown model {name!r}; this server serves {model_name!r}")

    @app.get("/healthz")
    def health():
        return {"status": "ok", "version": holder.model.version}

    @app.get("/v1/models/{name}")
    def status(name: str):
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
        name, _, verb = name_and_verb.rpartition(":")
        if verb != "predict":
            raise HttpError(404, f"unknown method {verb!r}; use /v1/models/{model_name}:predict")
        check_name(name)
        raw = await _read_body(request, max_request_bytes)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HttpError(400, f"the body is not valid JSON: {e}") from None
        model = holder.model
        return await run_in_threadpool(_predict, model, body)

    @app.get("/v1/similar/{item_id:path}")
    def similar(item_id: str, k: str = "10"):
        model = holder.model
        k_value = _parse_k(k, model.max_k)
        try:
            (row,) = model.similar([item_id], k_value)
        except serving.UnknownItemError as e:
            raise HttpError(404, str(e)) from None
        return {
            "item_id": item_id,
            "version": model.version,
            "neighbors": [{"id": i, "score": s} for i, s in row],
        }

    from ssl_retrieval import page  # noqa: PLC0415  (page imports this module)

    app.include_router(page.router(holder, compare))
    return app
