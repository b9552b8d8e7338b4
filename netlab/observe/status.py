"""What labs exist and how they are doing, as plain data for tables and ``--json``."""

from __future__ import annotations

from netlab.lab import lifecycle as lablib
from netlab.lab.state import load_record
from netlab.runtime import supervisor


def lab_status(lab: str) -> dict:
    rec = load_record(lab)
    nss = lablib.lab_netns(lab)
    data: dict = {"lab": lab, "netns": len(nss), "state": rec.state if rec else "leftover",
                  "mode": rec.mode if rec else None, "istio_version": rec.istio_version if rec else None,
                  "encap": rec.encap if rec else None, "topology": rec.topology if rec else None,
                  "pods": len(rec.pods) if rec else 0, "processes": [], "supervisor": "down"}
    try:
        st = supervisor.request(lab, {"op": "status"}, timeout=2)
        data["supervisor"] = f"pid {st['pid']}"
        data["processes"] = st["processes"]
    except (OSError, ValueError):
        if rec:
            data["state"] = "broken (supervisor gone: run `netlab gc`)"
    data["ready"] = sum(1 for p in data["processes"] if p["ready"])
    if rec:
        data["enrolled"] = sorted(p for p, v in rec.pods.items() if v.get("ambient"))
    return data


def all_status() -> list[dict]:
    return [lab_status(x) for x in lablib.known_labs()]
