"""iptables in a lab netns: atomic ``iptables-restore`` of text the plan rendered.

The variant (nft or legacy) is picked the way Istio's CNI picks it: prefer the one that
already holds rules, else the one ``iptables`` itself is. ``python-iptables`` (libiptc,
legacy only) is the alternative backend; both must leave the same ``iptables-save``.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess

from netlab.errors import ApplyError, PreflightError
from netlab.linux import nsenter
from netlab.linux.nsenter import netns_path

log = logging.getLogger(__name__)


VARIANT_ENV = "NETLAB_IPTABLES_VARIANT"
BACKENDS = ("restore", "python-iptables")


def backend_variant(backend: str) -> str | None:
    """The variant a lab's rules live in: python-iptables (libiptc) can only write legacy tables."""
    return "legacy" if backend == "python-iptables" else None


@functools.cache
def variant() -> str:
    """``nft`` or ``legacy``: ``$NETLAB_IPTABLES_VARIANT`` (set for the agents of a lab whose rules
    are legacy), else what ``iptables --version`` says (``(nf_tables)`` or ``(legacy)``)."""
    forced = os.environ.get(VARIANT_ENV)
    if forced in ("nft", "legacy"):
        return forced
    exe = shutil.which("iptables")
    if not exe:
        raise PreflightError("iptables is not installed", hint="apt-get install iptables")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return "nft" if "nf_tables" in out else "legacy"


def tool(name: str, v: str | None = None) -> str:
    """``tool("iptables-restore") -> 'iptables-nft-restore'`` (or legacy), falling back to plain."""
    v = v or variant()
    cand = name.replace("iptables", f"iptables-{v}", 1)
    return cand if shutil.which(cand) else name


def in_netns(ns: str, argv: list[str]) -> list[str]:
    """``argv`` as a command line that runs it in ``ns`` (for people and logs)."""
    return ["nsenter", f"--net={netns_path(ns)}", *argv]


def _run(ns: str, argv: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``ns`` as ``nsenter --net`` would, without nsenter's extra exec: the
    child is started by this thread while it is inside ``ns`` (a child inherits the netns of
    the thread that forks it). In-pod enrollment runs this twice per pod."""
    with nsenter.netns(ns):
        return subprocess.run(argv, input=text, capture_output=True, text=True)


def restore(ns: str, text: str, *, noflush: bool = False, v: str | None = None) -> None:
    argv = [tool("iptables-restore", v), "-w", "5"] + (["--noflush"] if noflush else [])
    log.debug("%s: iptables-restore%s\n%s", ns, " --noflush" if noflush else "", text)
    p = _run(ns, argv, text)
    if p.returncode != 0:
        raise ApplyError(f"{ns}: iptables-restore failed: {p.stderr.strip().splitlines()[-1] if p.stderr else p.returncode}",
                         obj="iptables-restore")


def save(ns: str, v: str | None = None) -> str:
    p = _run(ns, [tool("iptables-save", v)])
    if p.returncode != 0:
        raise ApplyError(f"{ns}: iptables-save failed: {p.stderr.strip()}", obj="iptables-save")
    return p.stdout

