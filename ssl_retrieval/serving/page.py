"""The browser page at `/`: items similar to X, two models side by side, a new item (cold start).

Mounted by `http_app.create_app`; the HTML, JS and CSS are plain files in `ssl_retrieval/serving/static/`
(package data, no build step, nothing fetched from outside the server). The page talks to these
endpoints, which answer with the model's neighbours plus what the export's item catalogue
(`ssl_retrieval.serving.item_catalog`) knows of each item:

  GET  /page/info                       what is served (export_info.json) and the compare export
  GET  /page/items?prefix=vi&limit=10   ids starting with a prefix (at most MAX_COMPLETIONS)
  GET  /page/similar/<item_id>?k=10&model=served|compare
       -> {"model", "version", "item_id", "item": {features, train_pairs, popularity} | null,
           "neighbors": [{"rank", "id", "score", "features", "train_pairs", "popularity"}]}
  POST /page/similar_by_features        {"features": {...}, "k": 10, "model": "served"} -> same
                                        shape, "item" = the features given

Requests go through the same validation as the REST API (`http_app._predict`), so bad input gets
the same status and message: unknown item 404 "unknown item id(s): ...", bad k 400.
"""

from __future__ import annotations

import importlib.resources
import threading

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ssl_retrieval.serving import http_app, item_catalog

MAX_COMPLETIONS = 50
MAX_PREFIX_CHARS = 200
MAX_BODY_BYTES = 1 << 16
STATIC = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}


class Catalogs:
    """The item catalogue of each loaded version, read once (a newer version brings its own)."""

    def __init__(self):
        self._loaded: dict[str, item_catalog.Catalog | None] = {}
        self._lock = threading.Lock()

    def get(self, version_dir: str) -> item_catalog.Catalog | None:
        with self._lock:
            if version_dir not in self._loaded:
                if len(self._loaded) > 4:  # versions come and go on a long-running server
                    self._loaded.clear()
                self._loaded[version_dir] = item_catalog.Catalog.load(version_dir)
            return self._loaded[version_dir]


def _static(name: str) -> bytes:
    return (importlib.resources.files("ssl_retrieval.serving") / "static" / name).read_bytes()


def _summary(model, catalog) -> dict:
    info = model.info
    keys = (
        "version",
        "created",
        "method",
        "num_items",
        "embedding_dim",
        "max_k",
        "index",
        "index_params",
        "recall_at_10_vs_brute_force",
        "recall_sample",
    )
    # No filesystem paths: the page may be shown to people who should not learn the server's.
    out = {key: info.get(key) for key in keys}
    out["features"] = model.features
    out["catalog"] = (
        None if catalog is None else {"num_items": catalog.num_items, "bytes": catalog.bytes}
    )
    return out


def router(served: http_app.ModelHolder, compare: http_app.ModelHolder | None) -> APIRouter:
    """The page's routes over the served model and, when given, a second one to compare with."""
    holders = {"served": served}
    if compare is not None:
        holders["compare"] = compare
    catalogs = Catalogs()

    def preload():  # reading a large catalogue takes seconds; not on the first page view
        for holder in holders.values():
            threading.Thread(target=catalogs.get, args=(holder.model.path,), daemon=True).start()

    routes = APIRouter(
        on_startup=[preload] + [h.start for h in holders.values() if h is not served],
        on_shutdown=[h.stop for h in holders.values() if h is not served],
    )

    def pick(name: str):
        """(model, its catalogue or None) of "served" or "compare"; reads a catalogue once."""
        if name == "compare" and name not in holders:
            message = "no compare export is served (start with --compare_export_dir)"
            raise http_app.HttpError(404, message)
        if name not in holders:
            raise http_app.HttpError(400, f"model must be one of {sorted(holders)}, got {name!r}")
        model = holders[name].model
        return model, catalogs.get(model.path)

    def neighbours(name, model, catalog, body, query_id, query_item):
        (row,) = http_app._predict(model, body)["predictions"]
        out = []
        for rank, (item_id, score) in enumerate(zip(row["ids"], row["scores"], strict=True), 1):
            known = catalog.get(item_id) if catalog is not None else None
            out.append({"rank": rank, "id": item_id, "score": score, **(known or {})})
        return {
            "model": name,
            "version": model.version,
            "item_id": query_id,
            "item": query_item,
            "neighbors": out,
        }

    @routes.get("/", include_in_schema=False)
    def index():
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    @routes.get("/page/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            raise http_app.HttpError(404, f"no static file {name!r}")
        return Response(_static(name), media_type=STATIC[name])

    @routes.get("/page/info")
    def info():
        return {
            "served": _summary(*pick("served")),
            "compare": _summary(*pick("compare")) if "compare" in holders else None,
        }

    @routes.get("/page/items")
    def items(prefix: str = "", limit: str = "10", model: str = "served"):
        if len(prefix) > MAX_PREFIX_CHARS:
            raise http_app.HttpError(400, f"prefix longer than {MAX_PREFIX_CHARS} characters")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_COMPLETIONS:
            raise http_app.HttpError(
                400, f"limit must be an integer between 1 and {MAX_COMPLETIONS}, got {limit!r}"
            )
        _, catalog = pick(model)
        if catalog is None:
            return {"prefix": prefix, "items": [], "catalog": False}
        return {"prefix": prefix, "items": catalog.prefix(prefix, int(limit)), "catalog": True}

    @routes.get("/page/similar/{item_id:path}")
    def similar(item_id: str, k: str = "10", model: str = "served"):
        loaded, catalog = pick(model)
        body = {"signature_name": "similar_items", "instances": [item_id], "k": k}
        item = catalog.get(item_id) if catalog is not None else None
        return neighbours(model, loaded, catalog, body, item_id, item)

    @routes.post("/page/similar_by_features")
    async def similar_by_features(request: Request):
        raw = await http_app._read_body(request, MAX_BODY_BYTES)
        body = http_app._parse_json(raw)  # the API's parser: deep nesting, huge integers: 400
        if not isinstance(body, dict) or not isinstance(body.get("features"), dict):
            raise http_app.HttpError(400, "the body must be {'features': {...}, 'k': 10}")
        name = body.get("model", "served")
        if not isinstance(name, str):
            raise http_app.HttpError(400, f"model must be a string, got {name!r}")
        model, catalog = await run_in_threadpool(pick, name)
        request_body = {
            "signature_name": "similar_items_by_features",
            "instances": [body["features"]],
            "k": body.get("k", 10),
        }
        item = {"features": body["features"]}
        return await run_in_threadpool(neighbours, name, model, catalog, request_body, None, item)

    return routes
