"""Know at once when a file is replaced: inotify on its directory (istiod pushes, not polled).

The lab's registry is written to a temporary file then renamed over ``registry.json``
(enroll, unenroll, up), so a watch on the file itself would follow the old inode; the
directory is watched instead, for a write closed on, or a rename onto, that one name.
Python has no inotify binding, hence ctypes (as :mod:`netlab.linux.nsenter` does for setns).

>>> import asyncio, tempfile
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "r.json")
>>> async def demo():
...     w = FileWatch(p)
...     waiter = asyncio.ensure_future(w.changed())
...     await asyncio.sleep(0)
...     open(p + ".tmp", "w").close(); os.replace(p + ".tmp", p)
...     await asyncio.wait_for(waiter, 2)
...     w.close()
...     return "changed"
>>> asyncio.run(demo())
'changed'
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class FileWatch:
    """``await changed()`` returns once ``path`` was rewritten or renamed onto since the last call.

    Raises ``OSError`` at construction when inotify is not available (no instances left,
    no kernel support): the caller then falls back to polling.
    """

    def __init__(self, path: str) -> None:
        self.name = os.fsencode(os.path.basename(path))
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        if _libc.inotify_add_watch(fd, os.fsencode(os.path.dirname(path) or "."), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {os.path.dirname(path)}: {os.strerror(err)}")
        self.fd = fd
        self._pending = False
        self._event = asyncio.Event()

    def _drain(self) -> None:
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            off = 0
            while off + _EVENT.size <= len(buf):
                _, mask, _, n = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size: off + _EVENT.size + n].rstrip(b"\0")
                off += _EVENT.size + n
                if mask & IN_Q_OVERFLOW or name == self.name:
                    self._pending = True

    def _readable(self) -> None:
        self._drain()
        if self._pending:
            self._event.set()

    async def changed(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.fd, self._readable)
        try:
            await self._event.wait()
        finally:
            loop.remove_reader(self.fd)
        self._event.clear()
        self._pending = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
