"""Run the report: for each design, up → scenario → capture → trace → objects → enroll → down.

Each design gets a lab of its own (``<name>-none``, ``<name>-nr``, ``<name>-ip``) that lives
only for its phase sequence: ``down`` runs in a ``finally``, so an error or Ctrl-C in any phase
still leaves nothing behind. The baseline (``none``) is measured in the same run and every other
design's figures are divided by its. The typed :class:`Report` is returned and written by
:func:`write`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydantic import ValidationError

from netlab import __version__
from netlab.errors import LabError, NetlabError
from netlab.lab import lifecycle as lablib
from netlab.linux.files import write_atomic
from netlab.observe.report import enrollment, probe, scenario
from netlab.observe.report.objects import collect
from netlab.observe.report.render import render
from netlab.observe.report.schema import SCHEMA_VERSION, DesignRun, Phase, Ratios, Report, Scenario
from netlab.topology import load_topology

log = logging.getLogger(__name__)
DESIGNS = ("none", "node-routing", "inpod")
SHORT = {"none": "none", "node-routing": "nr", "inpod": "ip"}
WARMUP = 5  # requests before the measured ones, in every design alike
VERSIONS = {"node-routing": ("1.18", "1.19", "1.20"), "inpod": ("1.21", "1.22", "1.23", "1.24")}
Progress = Callable[[str, str], None]  # (design, phase) as each phase starts; phase "done" at the end
Inspect = Callable[[str, str], None]  # (lab, design) while the lab is up, after the objects are read


def _noop(design: str, phase: str) -> None:
    pass


@dataclass(frozen=True)
class Options:
    topology: str
    out_dir: str
    designs: tuple[str, ...] = DESIGNS
    istio_version: str | None = None
    requests: int = 50
    bulk_mib: int = 16
    client: str = "sleep"
    url: str = "http://productpage:9080/"
    name: str = "report"


def parse_designs(text: str) -> tuple[str, ...]:
    """``none,node-routing,inpod`` -> a tuple in that order, each known, none twice.

    >>> parse_designs("inpod,none")
    ('inpod', 'none')
    """
    out = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in out if d not in DESIGNS]
    if bad or not out or len(set(out)) != len(out):
        raise LabError(f"--designs takes a comma-separated list of {', '.join(DESIGNS)} (each once), not {text!r}")
    return out


def version_for(design: str, version: str | None) -> str | None:
    """``--istio-version`` applies to the design that reproduces it; the other keeps its default.

    >>> version_for("inpod", "1.24"), version_for("node-routing", "1.24"), version_for("none", "1.20")
    ('1.24', None, None)
    """
    if version is None or design not in VERSIONS:
        return None
    if not any(version in v for v in VERSIONS.values()):
        raise LabError(f"--istio-version {version}: netlab reproduces "
                       + ", ".join(f"{d} {'/'.join(v)}" for d, v in VERSIONS.items()))
    return version if version in VERSIONS[design] else None


def run(opts: Options, *, progress: Progress = _noop, inspect: Inspect | None = None) -> Report:
    for d in opts.designs:
        version_for(d, opts.istio_version)  # refuse a bad version before anything else
    lablib.require_root()
    for d in opts.designs:
        lab = f"{opts.name}-{SHORT[d]}"
        if lab in lablib.known_labs():
            raise LabError(f"lab {lab!r} exists; a report stands up labs of its own",
                           hint=f"`netlab down {lab}`, or pick another --name")
    t0 = time.monotonic()
    runs = [_design(opts, d, progress, inspect) for d in opts.designs]
    base = next((r for r in runs if r.design == "none"), None)
    if base:
        runs = [r if r is base else r.model_copy(update={"ratios": ratios(r, base)}) for r in runs]
    progress("", "done")
    return Report(netlab_version=__version__,
                  created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  host=f"Linux {os.uname().release}, {os.cpu_count()} CPUs",
                  scenario=Scenario(topology=os.path.basename(opts.topology).removesuffix(".yaml"),
                                    client=opts.client, url=opts.url, requests=opts.requests,
                                    bulk_mib=opts.bulk_mib),
                  designs=runs, seconds=round(time.monotonic() - t0, 2))


def ratios(run: DesignRun, base: DesignRun) -> Ratios:
    def r(a: float | None, b: float | None) -> float | None:
        return float(f"{a / b:.4g}") if a is not None and b else None

    return Ratios(p50=r(run.latency.p50_ms, base.latency.p50_ms), p99=r(run.latency.p99_ms, base.latency.p99_ms),
                  requests_per_s=r(run.latency.requests_per_s, base.latency.requests_per_s),
                  bulk_mbit_s=r(run.bulk.mbit_s if run.bulk else None, base.bulk.mbit_s if base.bulk else None))


def _design(opts: Options, design: str, progress: Progress, inspect: Inspect | None) -> DesignRun:
    lab = f"{opts.name}-{SHORT[design]}"
    phases: list[Phase] = []
    notes: list[str] = []

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        progress(design, name)
        t = time.monotonic()
        yield
        phases.append(Phase(name=name, seconds=round(time.monotonic() - t, 3)))

    with phase("up"):
        up = lablib.up(opts.topology, name=lab, mode=design, istio_version=version_for(design, opts.istio_version))
    try:
        rec = lablib.record_of(lab)
        if opts.client not in rec.pods:
            raise LabError(f"lab {lab}: no pod named {opts.client!r} (--from)",
                           hint="pods: " + ", ".join(sorted(rec.pods)))
        client_ns = rec.members[opts.client]
        server = scenario.server_pod(lab, client_ns, opts.url, rec.pods, _services(rec.topology, rec.pods))
        pcaps_dir = os.path.join(opts.out_dir, "pcaps", design)
        with phase("capture"):  # first, so the request opens every connection (Geneve SYNs, HBONE)
            scenario.wait_mesh(rec)
            path, pcaps = probe.capture_path(lab, rec, opts.client, opts.url, pcaps_dir, notes)
        with phase("scenario"):
            scenario.wait_path(client_ns, opts.url)
            scenario.latency(client_ns, opts.url, WARMUP)  # pools, caches, ARP: not measured
            lat = scenario.latency(client_ns, opts.url, opts.requests)
            bulk = None
            if opts.bulk_mib > 0:
                bulk = scenario.bulk(client_ns, rec.members[server], server, rec.pods[server]["ip"], opts.bulk_mib)
        with phase("trace"):
            trace = probe.trace_connection(lab, opts.client, opts.url, notes)
        with phase("objects"):
            objects = collect(lab)
        if inspect:
            inspect(lab, design)
        enroll = None
        if design != "none":
            with phase("enroll"):
                pod = enrollment.pick_pod(rec.pods, {opts.client, server})
                if pod:
                    enroll = enrollment.measure(lab, pod)
                else:
                    notes.append("no enrolled pod outside the scenario to measure an enrollment with")
    finally:
        with phase("down"):
            try:
                lablib.down(lab)
            except NetlabError as e:  # the first error wins; this one is logged
                log.error("down %s: %s", lab, e.message)
    return DesignRun(design=design, lab=lab, istio_version=up.istio_version, encap=up.encap, phases=phases,
                     latency=lat, bulk=bulk, ratios=None, objects=objects, path=path,
                     trace=list(trace.steps) if trace else None, enrollment=enroll,
                     pcaps=sorted(os.path.relpath(p, opts.out_dir) for p in pcaps), notes=notes)


def _services(topology: str, pods: dict[str, dict]) -> dict[str, list[str]]:
    """Service name -> the pods it selects, from the lab's topology."""
    topo = load_topology(topology)
    by_name = {p.name: p for p in topo.pods}
    return {s.name: sorted(n for n, p in by_name.items() if n in pods
                           and all(p.labels.get(k) == v for k, v in s.selector.items()))
            for s in topo.services}


def write(report: Report, out_dir: str) -> list[str]:
    """report.json, report.md, report.html and trace/<design>.json into ``out_dir``."""
    files = {"report.json": report.model_dump_json(indent=1) + "\n",
             "report.md": render(report, fmt="md"), "report.html": render(report, fmt="html")}
    for r in report.designs:
        if r.trace is not None:
            files[os.path.join("trace", f"{r.design}.json")] = json.dumps(
                {"lab": r.lab, "design": r.design, "source": report.scenario.client, "destination": report.scenario.url,
                 "steps": [s.__dict__ | {"kind": type(s).__name__} for s in r.trace]}, indent=1) + "\n"
    return write_files(out_dir, files)


def write_files(out_dir: str, files: dict[str, str]) -> list[str]:
    """Each file written whole or not at all (temp file, then rename): a reader never sees half."""
    written = []
    for rel, text in files.items():
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, text)
        written.append(path)
    return written


def load(path: str) -> Report:
    """A report.json written by this or an earlier netlab; a different schema is refused."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise LabError(f"{path}: not a readable report.json ({e})") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise LabError(f"{path}: report schema {data.get('schema_version') if isinstance(data, dict) else '?'}, "
                       f"this netlab reads schema {SCHEMA_VERSION}")

    try:
        return Report.model_validate(data)
    except ValidationError as e:
        raise LabError(f"{path}: not a valid report ({e.error_count()} errors, first: {e.errors()[0]['msg']})") from None
