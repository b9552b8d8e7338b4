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


def write_atomic(path: str, data: str | bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file and ``os.replace``.

    ``mode`` is the new file's permission bits (``0o600`` for private keys). On any error the
    temporary file is removed and ``path`` is left as it was.
    """
    d, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{base}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
