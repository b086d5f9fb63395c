"""What the REST API (`http_app`) and the page (`page`) share: the JSON error, the validation of a
request's values, the predict call, and reading a body.

Both answer bad input with the same status and message because both call these: an integer
parameter (`k`, the page's `limit`) goes through `parse_int`, a predict body through `validate`,
a body through `read_body` and `parse_json`. Every error is `HttpError`, which the app turns
into `{"error": message}` with its status.
"""

from __future__ import annotations

import asyncio
import json
import re

from starlette.requests import ClientDisconnect, Request

from ssl_retrieval.serving import api
from ssl_retrieval.serving.config import Limits

DEFAULT_LIMITS = Limits()
SIGNATURES = api.SIGNATURES
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,18}")  # ASCII digits only: "²".isdigit() is True
CLOSE = {"Connection": "close"}  # the rest of the body is not read: no keep-alive


class HttpError(Exception):
    """An answer other than 200: its status, a one-line message, optional headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def parse_int(value, name: str, low: int, high: int) -> int:
    """An integer parameter from JSON or a query string; HttpError 400 naming it otherwise.

    Text must be ASCII digits with an optional sign (no "²", "1e3" or 5,000 digits); JSON
    booleans are not integers.
    """
    if isinstance(value, str):
        if not _INT_TEXT.fullmatch(value.strip()):
            raise HttpError(400, f"{name} must be an integer, got {api.short_repr(value)}")
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"{name} must be an integer, got {api.short_repr(value)}")
    if not low <= value <= high:
        raise HttpError(
            400, f"{name} must be between {low} and {high}, got {api.short_repr(value)}"
        )
    return value


def parse_k(value, max_k: int) -> int:
    return parse_int(value, "k", 1, max_k)


def check_ids(instances) -> list[str]:
    """Item ids of similar_items instances (strings or {"item_id": ...}); HttpError 400."""
    # One pass in C where it can: a 1,000-id request is checked in the event loop, and a burst
    # of them must not keep it from the other requests (issue 35, item 4).
    ids = [i.get("item_id") if isinstance(i, dict) else i for i in instances]
    if not all(isinstance(i, str) for i in ids):
        bad = next(n for n, i in enumerate(ids) if not isinstance(i, str))
        raise HttpError(400, f"instances[{bad}]: expected an item id string or {{'item_id': ...}}")
    try:
        "".join(ids).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: api.encode_ids names the first such id
        try:
            api.encode_ids(ids)
        except ValueError as e:
            raise HttpError(400, str(e).replace("item_ids[", "instances[")) from None
    return ids


def _check_features(signature: str, instances: list, limits: Limits) -> None:
    n = len(instances)
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


def validate(model: api.SimilarItems, body, limits: Limits):
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
    k = parse_k(body.get("k", 10), model.max_k)
    if signature != "item_embedding" and n * k > limits.max_results:
        raise HttpError(
            413,
            f"instances x k = {n} x {k} = {n * k} exceeds the limit of "
            f"--max_results={limits.max_results}; send fewer instances or a smaller k",
        )
    if signature == "similar_items":
        return signature, check_ids(instances), k
    _check_features(signature, instances, limits)
    return signature, instances, k


def rows_json(rows) -> dict:
    """TF Serving's shape ({"predictions": [{"ids", "scores"}]}) plus, per item, the ranking
    that listed it and that ranking's score (`api.Neighbour`); "scores" never rise down a row."""
    return {
        "predictions": [
            {
                "ids": [n.id for n in row],
                "scores": [n.score for n in row],
                "sources": [n.source for n in row],
                "source_scores": [n.source_score for n in row],
            }
            for row in rows
        ]
    }


def run_features(model: api.SimilarItems, signature: str, instances, k: int) -> dict:
    """A similar_items_by_features or item_embedding call; HttpError 400 on bad features."""
    try:
        if signature == "similar_items_by_features":
            return rows_json(model.similar_by_features(instances, k))
        return {"predictions": model.embed(instances).tolist()}
    except ValueError as e:
        raise HttpError(400, str(e)) from None


def predict(model: api.SimilarItems, body, limits: Limits = DEFAULT_LIMITS) -> dict:
    """One predict body answered in the calling thread (no batching)."""
    signature, instances, k = validate(model, body, limits)
    if signature != "similar_items":
        return run_features(model, signature, instances, k)
    try:
        return rows_json(model.similar(instances, k))
    except api.UnknownItemError as e:
        raise HttpError(404, str(e)) from None
    except ValueError as e:
        raise HttpError(400, str(e)) from None


async def read_body(
    request: Request,
    limit: int,
    timeout: float | None = None,
    limit_name: str = "--max_request_bytes",
) -> bytes:
    """The body, at most `limit` bytes, all of it within `timeout` seconds (else 413 / 408).

    `limit_name` is what the 413 message names as the limit (a flag, or a fixed bound).
    """
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise HttpError(
            413,
            f"request body of {length} bytes exceeds the limit of {limit} ({limit_name})",
            CLOSE,
        )
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HttpError(
                        413,
                        f"request body exceeds the limit of {limit} bytes ({limit_name})",
                        CLOSE,
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(
            408,
            f"the request body did not arrive within {timeout:g} s (--body_timeout_seconds)",
            CLOSE,
        ) from None
    except ClientDisconnect:
        raise HttpError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def parse_json(raw: bytes):
    """The JSON value of a body; HttpError 400 (bad JSON, deep nesting, integers over 4,300
    digits)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise HttpError(400, "the body is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, integers over 4,300 digits
        raise HttpError(400, f"the body is not valid JSON: {api.short_repr(str(e))}") from None


async def _disconnect(receive) -> None:
    """Returns when the client has gone (call it only after the body was read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work):
    """Awaits the coroutine `work`; cancels it when the client disconnects first.

    A request whose client has gone is not worth computing: its answer would be thrown away,
    and the work would delay the requests of clients still waiting (issue 35, item 4).

    Raises:
      HttpError: 499 (nginx's "client closed request") when the client left; nobody reads it.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise HttpError(499, "the client closed the connection before the answer")
    return task.result()
