"""Batching of similar-items queries, fair to small requests, and the bound on queued work.

`Batcher` gathers the similar_items queries of concurrent requests (both endpoints) into one
call of the index, like TF Serving's batching: the queries that arrive while a call runs form
the next one (`window_seconds` lets the first one wait for more). Answers are the same as one
call per query (the index always searches max_k + 1 and each answer keeps its first k).

Each call takes at most `max_batch` queries, smallest requests first: a request of 1,000 ids
is answered in chunks, and a single query that arrives meanwhile goes into the next call
instead of waiting behind all of it. A request whose client left (its future cancelled, see
`requests.unless_client_leaves`) is dropped before its next chunk runs. Index calls run on
one thread of their own, so requests running the towers (which use the shared thread pool)
cannot keep the index waiting for a thread.

`Backlog` bounds the queries waiting or running at once (`--max_queued_queries`): a request
that would go over it gets 503 with Retry-After instead of a place in an ever longer queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from ssl_retrieval.serving import api


class Busy(Exception):
    """More queries are queued or running than `--max_queued_queries` allows (503)."""

    def __init__(self, queued: int, limit: int, asked: int):
        super().__init__(
            f"server busy: {queued} queries are queued or running and this request adds "
            f"{asked}, over the limit of {limit} (--max_queued_queries); retry later"
        )


class Backlog:
    """The count of queries admitted and not yet answered; used from the event loop only."""

    def __init__(self, limit: int):
        self.limit = limit
        self.queued = 0

    @contextlib.contextmanager
    def admit(self, n: int):
        """Holds `n` queries for the block. A single query is always admitted: it goes first
        (see `Batcher`), so refusing it would not make anyone's answer come sooner.

        Raises:
          Busy: the request would take the count over the limit.
        """
        if n > 1 and self.queued + n > self.limit:
            raise Busy(self.queued, self.limit, n)
        self.queued += n
        try:
            yield
        finally:
            self.queued -= n


class _Pending:
    __slots__ = ("ids", "k", "future", "model", "rows", "found")

    def __init__(self, ids, k, future):
        self.ids, self.k, self.future = ids, k, future
        self.model = None  # the version its first chunk ran on: every chunk must use it
        self.rows: list = []
        self.found: list = []

    @property
    def remaining(self) -> int:
        return len(self.ids) - len(self.rows)


class Batcher:
    """Gathers the similar_items queries of concurrent requests into few model calls."""

    def __init__(self, holder, window_seconds: float = 0.001, max_batch: int = 256):
        self.holder = holder
        self.window = window_seconds
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wake = None
        self._loop = None
        self._task = None
        self._executor = None

    async def similar(self, ids: list[str], k: int):
        """(model, rows) for `ids` (validated strings), or raises UnknownItemError."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._wake, self._pending = loop, asyncio.Event(), []
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="similar_items")
            self._task = loop.create_task(self._run(self._executor))
        future = loop.create_future()
        self._pending.append(_Pending(ids, k, future))
        self._wake.set()
        return await future

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._executor.shutdown(wait=False)
            self._task = self._loop = self._executor = None

    def _take(self, model) -> list[tuple[_Pending, int, int]]:
        """The next call's (request, start, stop) parts: smallest remaining work first."""
        kept = []
        for p in self._pending:
            if p.future.done():  # the client went away
                continue
            if p.model is not None and p.model is not model:  # a new version: start again
                p.model, p.rows, p.found = None, [], []
            kept.append(p)
        self._pending = kept
        parts, size = [], 0
        for p in sorted(kept, key=lambda p: p.remaining):  # stable: arrival order on ties
            take = min(p.remaining, self.max_batch - size)
            if take <= 0:
                break
            start = len(p.rows)
            parts.append((p, start, start + take))
            size += take
        return parts

    async def _run(self, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                if self.window > 0 and sum(p.remaining for p in self._pending) < self.max_batch:
                    await asyncio.sleep(self.window)
            model = self.holder.model
            parts = self._take(model)
            if not parts:
                continue
            ids = [i for p, a, b in parts for i in p.ids[a:b]]
            k = min(max(p.k for p, _, _ in parts), model.max_k)
            try:
                rows, found = await loop.run_in_executor(executor, model.similar_rows, ids, k)
            except Exception as e:  # noqa: BLE001  (handed to each request, the loop goes on)
                for p, _, _ in parts:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            self._hand_out(model, parts, rows, found)

    def _hand_out(self, model, parts, rows, found) -> None:
        start = 0
        for p, a, b in parts:
            n = b - a
            p.model = model
            p.rows.extend(rows[start : start + n])
            p.found.extend(found[start : start + n].tolist())
            start += n
            if p.remaining or p.future.done():
                continue
            if not all(p.found):
                missing = [i for i, hit in zip(p.ids, p.found, strict=True) if not hit]
                p.future.set_exception(api.UnknownItemError(missing))
            else:
                p.future.set_result((model, [row[: p.k] for row in p.rows]))
        self._pending = [p for p in self._pending if p.remaining and not p.future.done()]
