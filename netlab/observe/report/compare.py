"""``netlab report --compare A/report.json B/report.json``: two earlier runs side by side.

Both files are read back into the typed :class:`Report` (a file of another schema version is
refused, not half-read), and rendered by the same templates as a single run, with every design
column labelled by the run it came from (A, B). Nothing is re-measured.
"""

from __future__ import annotations

import json
import os

from netlab.observe.report.render import render_compare
from netlab.observe.report.runner import load, write_files


def write_compare(a_path: str, b_path: str, out_dir: str) -> list[str]:
    a, b = load(a_path), load(b_path)
    files = {"report.md": render_compare(a, b, fmt="md"), "report.html": render_compare(a, b, fmt="html"),
             "compare.json": json.dumps({"schema_version": a.schema_version,
                                         "sources": {"A": os.path.abspath(a_path), "B": os.path.abspath(b_path)}},
                                        indent=1) + "\n"}
    return write_files(out_dir, files)
