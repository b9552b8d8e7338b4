"""Bad capture requests are refused before any socket is opened."""

from __future__ import annotations

import pytest

from netlab.errors import LabError
from netlab.observe import capture


def test_seconds_or_command_not_both_nor_neither(tmp_path) -> None:
    for kw in ({}, {"seconds": 1.0, "command": ("nl-x.sleep", ["true"])}):
        with pytest.raises(LabError, match="either --seconds"):
            capture.capture("x", str(tmp_path), members={"sleep": "nl-x.sleep"}, **kw)


def test_only_names_a_lab_member() -> None:
    with pytest.raises(LabError, match="no lab member named 'nope'"):
        capture.lab_interfaces({"sleep": "nl-x.sleep"}, ["nope:eth0"])


def test_bad_filter_is_one_clear_error() -> None:
    with pytest.raises(LabError, match="--filter"):
        capture.compile_bpf("tcp port nonsense-port")
