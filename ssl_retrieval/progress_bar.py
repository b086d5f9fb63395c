"""Progress of long work: a bar on a terminal, periodic log lines elsewhere.

    with progress_bar.Bar("retrieval", total=len(queries), unit="queries") as bar:
        for batch in batches:
            ...
            bar.update(len(batch))

On a terminal (the command's stderr is a TTY) it is tqdm's bar, the style users know from tqdm
and keras' `fit`, with what the work adds after the counts (`status`: a loss, examples/s):

    retrieval:  45%|████▌     | 13312/29389 [00:21<00:25, 630queries/s]

Elsewhere (CI, a file, a pipe) a bar would be a heap of carriage returns, so it logs a line at
INFO every `every_seconds` (`EVERY_SECONDS`):

    I 12:03:04 retrieval: 13312/29389 queries (45%), 00:21 elapsed, about 00:25 left

and, when it logged one, a last line once the work is done. Work shorter than that interval
leaves no line behind in either (its bar goes away when done): the command's own lines say what
it did.

Both follow the command's logging (`logs.py`): nothing is shown when the package's INFO records
are not (`--verbosity=-1`, or a library call in a process that set no logging up). While a bar
is on the terminal, the log lines of the console's handlers are written above it (tqdm's
`write`), not across it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import tqdm

EVERY_SECONDS = 60.0
_ACTIVE: list[Bar] = []  # the bars on the terminal, innermost last


class Bar:
    """The progress of one piece of work (see the module docstring).

    Args:
      desc: what is being done, as the command's lines name it ("train", "retrieval").
      total: how many units the work has (None: unknown, no percentage or time left).
      unit: what is counted, plural ("steps", "queries").
      initial: units done before (a resumed run): counted, but not in the rate or time left.
      every_seconds: seconds between log lines when the stream is not a terminal (None:
        `EVERY_SECONDS`).
      stream: where a bar would go (default: sys.stderr, as the bar is created).
      clock: seconds, for tests.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "items",
        initial: int = 0,
        every_seconds: float | None = None,
        stream=None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.desc, self.total, self.unit = desc, total, unit
        self.n = self._initial = initial
        self.status = ""
        self.lines = 0  # log lines written (not on a terminal)
        self.stream = sys.stderr if stream is None else stream
        self._every = EVERY_SECONDS if every_seconds is None else every_seconds
        self._clock = clock
        self._start = self._last_line = clock()
        self._bar = None
        if total != 0 and _shows_info() and _is_terminal(self.stream):
            self._bar = tqdm.tqdm(
                total=total,
                desc=desc,
                unit=unit,
                initial=initial,
                file=self.stream,
                leave=not _ACTIVE,  # a bar inside another (a validation in training) goes away
                dynamic_ncols=True,
                mininterval=0.2,
            )
            _opened(self)

    def update(self, n: int = 1, status: str | None = None) -> None:
        """`n` more units done; `status` (when given) replaces the text after the counts."""
        self.n += n
        if status is not None:
            self.status = status
            if self._bar is not None:
                self._bar.set_postfix_str(status, refresh=False)
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        if now - self._last_line >= self._every:
            self._log(now)

    def close(self, done: bool = True) -> None:
        """Ends the bar (on a terminal) or logs the last line (when it logged any); `done`
        False (the work failed): no last line, and the bar stays as it was."""
        if self._bar is not None:
            # As in a file, work shorter than the interval leaves no line behind.
            elapsed = self._clock() - self._start
            self._bar.leave = self._bar.leave and (not done or elapsed >= self._every)
            self._bar.close()
            self._bar = None
            _closed(self)
        elif self.lines and done:
            self._log(self._clock(), done=True)
        self.lines = 0  # closed twice: one last line

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(done=exc_type is None)

    def line(self, now: float, done: bool = False) -> str:
        """The log line's text: counts, status, elapsed time and (not done) the time left."""
        elapsed = now - self._start
        if self.total:
            text = f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            text = f"{self.n} {self.unit}"
        if self.status:
            text += f" {self.status}"
        if done:
            return f"{self.desc}: {text}, done in {tqdm.tqdm.format_interval(elapsed)}"
        text += f", {tqdm.tqdm.format_interval(elapsed)} elapsed"
        if self.total and self._initial < self.n < self.total:
            left = elapsed * (self.total - self.n) / (self.n - self._initial)
            text += f", about {tqdm.tqdm.format_interval(left)} left"
        return f"{self.desc}: {text}"

    def _log(self, now: float, done: bool = False) -> None:
        logging.info("%s", self.line(now, done))
        self.lines += 1
        self._last_line = now


def _shows_info() -> bool:
    """Whether the package's INFO records are shown (absl's --verbosity sets the root's level)."""
    return logging.getLogger("ssl_retrieval").isEnabledFor(logging.INFO)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


class _AboveBars(logging.Filter):
    """The last filter of a console handler while bars are on the terminal: writes the record
    above them (clear, line, redraw: tqdm's `write`) instead of through the handler, whose
    stream may be another file object on the same terminal (`logs.NativeFilter`'s pipe)."""

    def __init__(self, handler: logging.Handler):
        super().__init__()
        self.handler = handler

    def filter(self, record):
        if not _ACTIVE:
            return True
        tqdm.tqdm.write(self.handler.format(record), file=_ACTIVE[-1].stream)
        return False


def _is_console(handler: logging.Handler) -> bool:
    """A handler that writes to the process's stderr or stdout (absl's through its
    `python_handler`), not to a file."""
    stream = getattr(getattr(handler, "python_handler", handler), "stream", None)
    consoles = (sys.stderr, sys.__stderr__, sys.stdout, sys.__stdout__)
    return stream is not None and any(stream is c for c in consoles)


def _opened(bar: Bar) -> None:
    if not _ACTIVE:
        for handler in logging.getLogger().handlers:
            if _is_console(handler):
                handler.addFilter(_AboveBars(handler))
    _ACTIVE.append(bar)


def _closed(bar: Bar) -> None:
    _ACTIVE.remove(bar)
    if not _ACTIVE:
        for handler in logging.getLogger().handlers:
            for f in [f for f in handler.filters if isinstance(f, _AboveBars)]:
                handler.removeFilter(f)
