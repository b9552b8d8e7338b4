"""Replace a file atomically: readers see the old content or the new, never half of it.

Lab state is read by other processes while it changes (ztunnel watches ``registry.json``,
``netlab status`` reads ``lab.json``, the forwarder's stats are read on demand), so every
such file is written to a temporary file in the same directory and renamed over the old one
(``rename(2)`` is atomic within a filesystem). The temporary name is unique per writer
(``mkstemp``), so two writers never interleave into one temporary file. No ``fsync``: the
files live in ``/run`` (tmpfs) or ``/etc/netns`` and need not survive a power loss.

>>> import tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "x.json")
>>> write_atomic(p, '{"a": 1}\\n')
>>> open(p).read(), oct(os.stat(p).st_mode & 0o777)
('{"a": 1}\\n', '0o644')
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def replacing(path: str, *, mode: int = 0o644) -> Iterator[str]:
    """``with replacing(path) as tmp:`` write ``tmp`` (e.g. with a streaming writer); on a normal
    exit it is renamed over ``path``, on an exception removed and ``path`` left as it was."""
    d, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{base}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str, data: str | bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file and ``os.replace``.

    ``mode`` is the new file's permission bits (``0o600`` for private keys, ``0o755`` for
    scripts). On any error the temporary file is removed and ``path`` is left as it was.
    """
    with replacing(path, mode=mode) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
