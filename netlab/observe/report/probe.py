"""The captured and the traced connection of the scenario, through the observe layer's
capture, hop reconstruction and trace."""

from __future__ import annotations

from netlab.observe.model import Trace
from netlab.observe.report.schema import PathReport


def capture_path(lab: str, rec, client: str, url: str, out_dir: str,
                 notes: list[str]) -> tuple[PathReport | None, list[str]]:
    notes.append("capture: netlab capture is not part of this build yet")
    return None, []


def trace_connection(lab: str, client: str, url: str, notes: list[str]) -> Trace | None:
    notes.append("trace: netlab trace is not part of this build yet")
    return None
