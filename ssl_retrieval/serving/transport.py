"""The server's connections: uvicorn's h11 protocol, with what idle and hostile clients hold
bounded (`--header_timeout_seconds`, `--keep_alive_seconds`, `--max_connections`).

Stock uvicorn closes a keep-alive connection idle after an answer, but not one that never sends
a request, nor one that dribbles its request head a byte at a time, and it has no cap on
connections: 20,000 idle sockets used up the process's file descriptors, new clients timed out,
and asyncio logged one `accept() out of system resource` traceback per attempt (250,000 lines
in 25 s). `GuardedProtocol` adds, per connection:

  - a header timeout: a whole request head must arrive within `header_timeout_seconds` of the
    connection opening or of its previous answer; else the connection is closed (408 in the
    JSON error shape if part of a head came). A request being answered is never cut: bodies
    have `--body_timeout_seconds`, model calls their own bounds.
  - a cap: over `max_connections` open (kept below the file-descriptor limit, see
    `fd_budget`), the longest idle connection is closed to make room; when
    none is idle, the new one is answered 503 and closed.
  - errors of the HTTP parser (a bad request line, a head over h11's 16 KiB) in the JSON error
    shape `{"error": ...}` with h11's status (400, or 431 for a head too large), not uvicorn's
    text/plain.

Evictions, refusals, parser errors and refused accepts are logged once, then at most once a
minute with a count (`Throttle`), never once per attempt.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import http
import json
import logging
import resource
import time

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

from ssl_retrieval.serving.config import Connections

FD_RESERVE = 256  # descriptors kept for model files, threads, logs and the listening socket
MAX_BACKLOG = 2048  # uvicorn's default listen backlog
ACCEPT_FAILED = "socket.accept() out of system resource"
PARSER_ERROR = "Invalid HTTP request received."


class Throttle:
    """Logs a kind of event the first time, then at most once per `interval` s with a count."""

    def __init__(self, interval: float = 60.0, clock=time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()

    def log(self, kind: str, message: str) -> bool:
        """Logs `message` (a warning) unless `kind` was logged less than `interval` ago."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] += 1
            return False
        more = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({more} more since the last such line)" if more else ""
        logging.getLogger("ssl_retrieval.serve").warning("%s%s", message, suffix)
        return True


def error_bytes(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response in the JSON error shape, closing the connection; for answers
    written outside a request cycle (timeouts, refusals, unparsable requests)."""
    body = json.dumps({"error": message}).encode()
    phrase = http.HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
        "x-content-type-options: nosniff\r\n\r\n"
    )
    return head.encode() + body


def fd_budget(wanted: int) -> tuple[int, int]:
    """(connection cap, listen backlog) that never run the process out of file descriptors.

    The soft limit is raised to the hard one first. asyncio accepts up to `backlog` sockets in
    one go before any of them reaches the cap, and an evicted connection's descriptor closes one
    loop turn later, so the cap leaves two backlogs and FD_RESERVE free: an accept() failing
    with EMFILE stops all accepting for a second (asyncio's back-off), and new clients' SYNs are
    then dropped by the kernel.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted, MAX_BACKLOG
    backlog = min(MAX_BACKLOG, max(64, soft // 4))
    return max(1, min(wanted, soft - 2 * backlog - FD_RESERVE)), backlog


class Guard:
    """The connections of one server: which are idle (oldest first) and the cap."""

    def __init__(self, limits: Connections, max_connections: int | None = None):
        self.limits = limits
        self.max_connections = max_connections or limits.max_connections
        self.throttle = Throttle()
        self._open: set = set()
        self._idle: collections.OrderedDict = collections.OrderedDict()

    def opened(self, protocol) -> bool:
        """Counts a new connection; False if it must be refused (at the cap, none idle)."""
        self._open.add(protocol)
        self._idle[protocol] = None
        if len(self._open) <= self.max_connections:
            return True
        victim = next(iter(self._idle))
        if victim is protocol:  # the only idle connection is the new one
            self.closed(protocol)
            self.throttle.log(
                "refused",
                f"serve: {len(self._open)} connections busy (--max_connections="
                f"{self.max_connections}); refusing new ones with 503",
            )
            return False
        self.closed(victim)
        victim.transport.close()
        self.throttle.log(
            "evicted",
            f"serve: {self.max_connections} connections open (--max_connections); closing "
            "the longest idle ones to make room",
        )
        return True

    def idle(self, protocol) -> None:
        if protocol in self._open:
            self._idle[protocol] = None
            self._idle.move_to_end(protocol)

    def busy(self, protocol) -> None:
        self._idle.pop(protocol, None)

    def closed(self, protocol) -> None:
        self._open.discard(protocol)
        self._idle.pop(protocol, None)

    @property
    def open_connections(self) -> int:
        return len(self._open)


class _Connection(h11.Connection):
    """h11's connection, remembering the parser error that uvicorn catches and drops."""

    error: h11.RemoteProtocolError | None = None

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as e:
            self.error = e
            raise


class GuardedProtocol(H11Protocol):
    """uvicorn's H11Protocol with a header timeout, a connection cap and JSON parser errors."""

    def __init__(self, *args, guard: Guard, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard = guard
        self._head_limit = (
            self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        )
        self.conn = _Connection(h11.SERVER, self._head_limit)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if not self.guard.opened(self):
            transport.write(error_bytes(503, "too many connections; retry later"))
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc) -> None:
        self.guard.closed(self)
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._sync()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._sync()

    def send_400_response(self, msg: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # an answer has begun
            self.transport.close()
            return
        error = self.conn.error
        status = getattr(error, "error_status_hint", 400) if error is not None else 400
        if status == 431:
            text = (
                "the request head (request line and headers) exceeds "
                f"{self._head_limit} bytes; send long values in a body"
            )
        else:
            text = f"invalid HTTP request ({error or msg})"
        self.transport.write(error_bytes(status, text))
        self.transport.close()

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _sync(self) -> None:
        """Idle connections run the header timer and may be evicted; busy ones neither."""
        if self.transport.is_closing():
            return
        if self._in_request():
            self.guard.busy(self)
            self._disarm()
        elif self._head_timer is None:
            self.guard.idle(self)
            self._arm()

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(
            self.guard.limits.header_timeout_seconds, self._head_timeout
        )

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._in_request() or self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # part of a head came: say why it is closed
            seconds = self.guard.limits.header_timeout_seconds
            message = f"the request head did not arrive within {seconds:g} s"
            self.transport.write(error_bytes(408, f"{message} (--header_timeout_seconds)"))
        self.transport.close()


class _ThrottledLog(logging.Filter):
    """Lets uvicorn's per-request parser warning through once a minute, with a count."""

    def __init__(self, throttle: Throttle):
        super().__init__()
        self.throttle = throttle

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != PARSER_ERROR:
            return True
        self.throttle.log("parser", "serve: invalid HTTP requests received (answered 400/431)")
        return False


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, throttle: Throttle) -> None:
    """One log line for refused accepts, not asyncio's traceback per attempt.

    asyncio's accept loop reports every failed accept() (up to the listen backlog per wake-up,
    again each second) to the loop's exception handler; this one counts them instead.
    """
    previous = loop.get_exception_handler()

    def handler(loop, context):
        if context.get("message") == ACCEPT_FAILED:
            throttle.log(
                "accept",
                f"serve: cannot accept connections ({context.get('exception')}); the process "
                "is out of file descriptors or memory. Lower --max_connections or raise "
                "`ulimit -n`",
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def uvicorn_config(app, limits: Connections, host: str = "127.0.0.1", port: int = 0, **kwargs):
    """(uvicorn.Config serving `app` with `GuardedProtocol`, its Guard)."""
    max_connections, backlog = fd_budget(limits.max_connections)
    guard = Guard(limits, max_connections)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        backlog=backlog,
        http=functools.partial(GuardedProtocol, guard=guard),
        ws="none",  # the app has no websocket route: no upgrade handling
        timeout_keep_alive=limits.keep_alive_seconds,
        server_header=False,
        **{"log_level": "warning", **kwargs},
    )
    return config, guard


async def serve(server: uvicorn.Server, guard: Guard, sockets=None) -> None:
    """Runs `server` in the running loop, with the loop's and uvicorn's floods throttled."""
    quiet_accept_errors(asyncio.get_running_loop(), guard.throttle)
    parser_log = _ThrottledLog(guard.throttle)
    logging.getLogger("uvicorn.error").addFilter(parser_log)
    try:
        await server.serve(sockets)
    finally:
        logging.getLogger("uvicorn.error").removeFilter(parser_log)


def run(app, limits: Connections, host: str, port: int) -> None:
    """Serves `app` on host:port until interrupted (what `python -m ssl_retrieval.serve` runs)."""
    config, guard = uvicorn_config(app, limits, host, port)
    if guard.max_connections < limits.max_connections:
        logging.warning(
            "serve: --max_connections=%d lowered to %d: the file-descriptor limit is %d, and "
            "the listen backlog (%d, twice) and %d others must fit beside the connections",
            limits.max_connections,
            guard.max_connections,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            config.backlog,
            FD_RESERVE,
        )
    asyncio.run(serve(uvicorn.Server(config), guard))
