"""write_atomic: readers never see a partial file, and a failed write leaves the old one."""

from __future__ import annotations

import os

import pytest

from netlab.linux.files import write_atomic


def test_replaces_content_and_sets_mode(tmp_path) -> None:
    p = tmp_path / "key.pem"
    p.write_text("old")
    ino = p.stat().st_ino
    write_atomic(str(p), b"new", mode=0o600)
    assert p.read_bytes() == b"new" and p.stat().st_mode & 0o777 == 0o600
    assert p.stat().st_ino != ino  # a new inode renamed over the old name, not a rewrite in place
    assert os.listdir(tmp_path) == ["key.pem"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    p = tmp_path / "lab.json"
    p.write_text('{"old": true}')

    class Boom(str):
        def encode(self, *a, **kw):  # type: ignore[override]
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(str(p), Boom("x"))
    assert p.read_text() == '{"old": true}' and os.listdir(tmp_path) == ["lab.json"]
