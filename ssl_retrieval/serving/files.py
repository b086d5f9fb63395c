"""Reading files a server did not write, without letting them stop it.

An export dir is written by other processes and people: a file there may be a FIFO (opening it
blocks until someone writes), a device, a socket, huge, unreadable, or on a file system that
stops answering. `read_regular` reads only regular files, at most a given size, within a
timeout, and says in one line what was wrong (`UnreadableFile`).
"""

from __future__ import annotations

import os
import stat
import threading

READ_TIMEOUT_SECONDS = 30.0
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


class UnreadableFile(OSError):
    """A file that is not regular, too large, unreadable or too slow to read.

    Attributes:
      path: the file; reason: what is wrong, without the path ("is a FIFO, not a regular
        file", "cannot be read (Permission denied)"); str(): the path and the reason.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path} {reason}")
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path} {self.reason}"


def kind(mode: int) -> str:
    """What a file of `st_mode` is, for messages ("a FIFO", "a regular file", ...)."""
    return _KINDS.get(stat.S_IFMT(mode), "a regular file" if stat.S_ISREG(mode) else "odd file")


def problem(error: OSError) -> str:
    """An OSError as a short cause: "Permission denied", "No such file or directory"."""
    return error.strerror or type(error).__name__


def _read(path: str, max_bytes: int) -> bytes:
    # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer
    # (the stat below then refuses it); on a regular file the flag changes nothing.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(path, f"is {kind(mode)}, not a regular file")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise UnreadableFile(path, f"is larger than the limit of {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_regular(path: str, max_bytes: int, timeout: float = READ_TIMEOUT_SECONDS) -> bytes:
    """The bytes of the regular file `path`.

    Raises:
      FileNotFoundError: there is no such file.
      UnreadableFile: it is not a regular file, holds more than `max_bytes`, cannot be read
        (the message names the cause, e.g. permission denied), or the read took over
        `timeout` seconds (the reading thread is left behind: a hung file system cannot be
        interrupted, but the caller goes on).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UnreadableFile(path, f"cannot be read ({problem(e)})") from None
    if not stat.S_ISREG(mode):  # checked before opening: opening a device may do things
        raise UnreadableFile(path, f"is {kind(mode)}, not a regular file")
    result: dict = {}

    def run():
        try:
            result["data"] = _read(path, max_bytes)
        except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
            result["error"] = e

    reader = threading.Thread(target=run, name=f"read {os.path.basename(path)}", daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise UnreadableFile(path, f"was not read within {timeout:g} s")
    error = result.get("error")
    if isinstance(error, UnreadableFile | FileNotFoundError):
        raise error
    if isinstance(error, OSError):
        raise UnreadableFile(path, f"cannot be read ({problem(error)})") from None
    if error is not None:
        raise error
    return result["data"]
