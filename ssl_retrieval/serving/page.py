"""The browser page at `/`: items similar to X, two models side by side, a new item (cold start).

Mounted by `http_app.create_app`; the HTML, JS and CSS are plain files in `ssl_retrieval/serving/static/`
(package data, no build step, nothing fetched from outside the server). The page talks to these
endpoints, which answer with the model's neighbours plus what the export's item catalogue
(`ssl_retrieval.serving.item_catalog`) knows of each item:

  GET  /page/info                       what is served (export_info.json) and the compare export
  GET  /page/items?prefix=vi&limit=10   ids starting with a prefix (at most MAX_COMPLETIONS)
  POST /page/similar                    {"item_id": "vim", "k": 10, "model": "served"|"compare"}
  GET  /page/similar?id=vim&k=10&model=served     the same, the id as a query parameter
  GET  /page/similar/<item_id>?k=10&model=served  the same, the id in the path
       -> {"model", "version", "item_id", "item": {features, train_pairs, popularity} | null,
           "neighbors": [{"rank", "id", "score", "source", "source_score", "features",
                          "train_pairs", "popularity"}]}
  POST /page/similar_by_features        {"features": {...}, "k": 10, "model": "served"} -> same
                                        shape, "item" = the features given

The page itself uses POST /page/similar: an id in a body reaches the server as it is, whatever it
holds (a browser normalises the paths `.` and `..`, and a URL over h11's 16 KiB is refused).

Requests go through the same validation as the REST API (`requests.predict`, `parse_int`), so
bad input gets the same status and message: unknown item 404 "unknown item id(s): ...", a bad
k or limit 400. A catalogue that cannot be used (unreadable, not gzip, malformed, larger than
`--max_catalog_bytes`) is not: the page shows ids and scores without features, `/page/info`
says why (`catalog_error`), and the server logs it once.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ssl_retrieval.serving import api, item_catalog
from ssl_retrieval.serving import requests as requests_lib
from ssl_retrieval.serving.config import Limits
from ssl_retrieval.serving.requests import HttpError

MAX_COMPLETIONS = 50
MAX_PREFIX_CHARS = 200
MAX_BODY_BYTES = 1 << 16
BODY_LIMIT_NAME = "the fixed limit of /page/ requests"
STATIC = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}


class Catalogs:
    """The item catalogue of each loaded version, read once; a failed read is remembered too
    (with its reason), so a bad catalogue costs one attempt and one log line, not one per
    request."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._loaded: dict[str, tuple[item_catalog.Catalog | None, str | None]] = {}
        self._lock = threading.Lock()

    def get(self, model: api.SimilarItems) -> tuple[item_catalog.Catalog | None, str | None]:
        """(catalogue or None, why it is not used or None) of a loaded version."""
        with self._lock:
            if model.path not in self._loaded:
                if len(self._loaded) > 4:  # versions come and go on a long-running server
                    self._loaded.clear()
                self._loaded[model.path] = self._load(model)
            return self._loaded[model.path]

    def _load(self, model: api.SimilarItems):
        try:
            return item_catalog.Catalog.load(model.path, model.info, self.max_bytes), None
        except item_catalog.CatalogError as e:
            logging.warning(
                "page: version %d (%s): item catalogue not used: %s; the page shows ids and "
                "scores without features",
                model.version,
                model.path,
                e,
            )
            return None, str(e)


def _static(name: str) -> bytes:
    return (importlib.resources.files("ssl_retrieval.serving") / "static" / name).read_bytes()


def _summary(model, catalog, catalog_error) -> dict:
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
    out["catalog_error"] = catalog_error
    return out


def _check_string(value, name: str, max_chars: int | None = None) -> str:
    if not isinstance(value, str):
        raise HttpError(400, f"{name} must be a string, got {api.short_repr(value)}")
    if max_chars is not None and len(value) > max_chars:
        raise HttpError(400, f"{name} longer than {max_chars} characters")
    return value


class _Page:
    """The page's models (served and, optionally, compare) and what its routes compute."""

    def __init__(self, served, compare, limits: Limits):
        self.holders = {"served": served}
        if compare is not None:
            self.holders["compare"] = compare
        self.limits = limits
        self.catalogs = Catalogs(limits.max_catalog_bytes)

    def preload(self):  # reading a large catalogue takes seconds; not on the first page view
        for holder in self.holders.values():
            threading.Thread(target=self.catalogs.get, args=(holder.model,), daemon=True).start()

    def pick(self, name):
        """(model, catalogue or None, why no catalogue) of "served" or "compare"."""
        name = _check_string(name, "model")
        if name == "compare" and name not in self.holders:
            message = "no compare export is served (start with --compare_export_dir)"
            raise HttpError(404, message)
        if name not in self.holders:
            raise HttpError(
                400, f"model must be one of {sorted(self.holders)}, got {api.short_repr(name)}"
            )
        model = self.holders[name].model
        return (model, *self.catalogs.get(model))

    def neighbours(self, name, body: dict, query_id, query_item=None) -> dict:
        """The page's answer: the predict body's neighbours with their catalogue entries."""
        model, catalog, _ = self.pick(name)
        if query_id is not None:
            query_item = catalog.get(query_id) if catalog is not None else None
        (row,) = requests_lib.predict(model, body, self.limits)["predictions"]
        out = []
        listed = zip(row["ids"], row["scores"], row["sources"], row["source_scores"], strict=True)
        for rank, (item_id, score, source, source_score) in enumerate(listed, 1):
            known = catalog.get(item_id) if catalog is not None else None
            out.append(
                {
                    "rank": rank,
                    "id": item_id,
                    "score": score,
                    "source": source,
                    "source_score": source_score,
                    **(known or {}),
                }
            )
        return {
            "model": name,
            "version": model.version,
            "item_id": query_id,
            "item": query_item,
            "neighbors": out,
        }

    def similar(self, item_id, k, model) -> dict:
        item_id = _check_string(item_id, "item_id")
        body = {"signature_name": "similar_items", "instances": [item_id], "k": k}
        return self.neighbours(model, body, item_id)

    async def body(self, request: Request) -> dict:
        raw = await requests_lib.read_body(
            request, MAX_BODY_BYTES, self.limits.body_timeout_seconds, BODY_LIMIT_NAME
        )
        body = requests_lib.parse_json(raw)  # the API's parser: deep nesting, huge integers: 400
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        return body


def router(served, compare, limits: Limits | None = None) -> APIRouter:
    """The page's routes over the served model's `holder.ModelHolder` and, when given, a second
    one to compare with."""
    page = _Page(served, compare, limits or Limits())
    routes = APIRouter(
        on_startup=[page.preload] + [h.start for h in page.holders.values() if h is not served],
        on_shutdown=[h.stop for h in page.holders.values() if h is not served],
    )

    @routes.get("/", include_in_schema=False)
    def index():
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    @routes.get("/page/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            raise HttpError(404, f"no static file {api.short_repr(name)}")
        return Response(_static(name), media_type=STATIC[name])

    @routes.get("/page/info")
    def info():
        return {
            "served": _summary(*page.pick("served")),
            "compare": _summary(*page.pick("compare")) if "compare" in page.holders else None,
        }

    @routes.get("/page/items")
    def items(prefix: str = "", limit: str = "10", model: str = "served"):
        prefix = _check_string(prefix, "prefix", MAX_PREFIX_CHARS)
        count = requests_lib.parse_int(limit, "limit", 1, MAX_COMPLETIONS)
        _, catalog, _ = page.pick(model)
        if catalog is None:
            return {"prefix": prefix, "items": [], "catalog": False}
        return {"prefix": prefix, "items": catalog.prefix(prefix, count), "catalog": True}

    @routes.get("/page/similar")
    def similar_by_query(
        item_id: str | None = Query(None, alias="id"), k: str = "10", model: str = "served"
    ):
        if item_id is None:
            raise HttpError(400, "give the item id as ?id=... (or POST {'item_id': ...})")
        return page.similar(item_id, k, model)

    @routes.get("/page/similar/{item_id:path}")
    def similar_by_path(item_id: str, k: str = "10", model: str = "served"):
        return page.similar(item_id, k, model)

    @routes.post("/page/similar")
    async def similar_by_body(request: Request):
        body = await page.body(request)
        if "item_id" not in body:
            raise HttpError(400, "the body must be {'item_id': ..., 'k': 10, 'model': 'served'}")
        args = (body["item_id"], body.get("k", 10), body.get("model", "served"))
        return await run_in_threadpool(page.similar, *args)

    @routes.post("/page/similar_by_features")
    async def similar_by_features(request: Request):
        body = await page.body(request)
        if not isinstance(body.get("features"), dict):
            raise HttpError(400, "the body must be {'features': {...}, 'k': 10}")
        request_body = {
            "signature_name": "similar_items_by_features",
            "instances": [body["features"]],
            "k": body.get("k", 10),
        }
        name, item = body.get("model", "served"), {"features": body["features"]}
        return await run_in_threadpool(page.neighbours, name, request_body, None, item)

    return routes
