"""``netlab show``: the kernel state of one lab member, printed by the tools a student knows."""

from __future__ import annotations

import subprocess

from netlab.apply.iptables import backend_variant, tool
from netlab.errors import ApplyError
from netlab.linux.nsenter import netns_path

SECTIONS: dict[str, list[list[str]]] = {
    "links": [["ip", "-d", "link", "show"], ["ip", "addr", "show"]],
    "routes": [["ip", "route", "show", "table", "all"]],
    "rules": [["ip", "rule", "show"]],
    "ipset": [["ipset", "list"]],
    "iptables": [["iptables-save"]],
}
ORDER = ("links", "routes", "rules", "ipset", "iptables")


def run_in(ns: str, argv: list[str]) -> str:
    return _run_in(ns, argv)[0]


def _run_in(ns: str, argv: list[str]) -> tuple[str, bool]:
    p = subprocess.run(["nsenter", f"--net={netns_path(ns)}", *argv], capture_output=True, text=True)
    return p.stdout + (p.stderr if p.returncode else ""), p.returncode == 0


def show(ns: str, what: str = "all", *, iptables_save: str = "iptables-save") -> list[tuple[str, str]]:
    """[(command, output)] for the sections asked; ``routes`` omits kernel local/broadcast noise.

    ``iptables_save`` names the dump tool: ``iptables-legacy-save`` for a lab whose rules were
    written through libiptc (``--iptables-backend python-iptables``).
    """
    sections = ORDER if what == "all" else (what,)
    out = []
    failed: list[str] = []
    for s in sections:
        for argv in SECTIONS[s]:
            if argv == ["iptables-save"]:
                argv = [iptables_save]
            text, ok = _run_in(ns, argv)
            if not ok:
                failed.append(text.strip().splitlines()[-1] if text.strip() else " ".join(argv))
            if s == "routes":
                text = "\n".join(ln for ln in text.splitlines()
                                 if not ln.startswith(("broadcast ", "multicast ", "fe80::", "anycast "))
                                 and not (ln.startswith("local ") and "table local" in ln)
                                 and "table local" not in ln) + "\n"
            out.append((" ".join(argv), text))
    if failed and len(failed) == len(out):  # nothing could be read: an error, not an empty success
        raise ApplyError(f"{ns}: every command failed ({failed[0]})", obj=f"netns {ns}")
    return out


def iptables_save_tool(backend: str) -> str:
    """The dump tool for a lab's rules: ``iptables-legacy-save`` when they went in through libiptc."""
    v = backend_variant(backend)
    return tool("iptables-save", v) if v else "iptables-save"

