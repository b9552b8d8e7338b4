"""Write an export directory: ``netlab export kind`` and ``netlab export observe``.

``export kind`` writes::

    DIR/kind.yaml               kind Cluster config (v1alpha4)
    DIR/manifests/<ns>.yaml     one per namespace: Namespace, ServiceAccounts, Deployments, Services
    DIR/run.sh                  create the cluster, install Istio, apply, wait, run the request
    DIR/export.json             what was exported (read back by ``export observe``)

``export observe DIR`` reads ``DIR/export.json`` and adds ``DIR/observe.sh`` and
``DIR/netlab_snapshot.py`` (a verbatim copy of :mod:`netlab.export.snapshot`).
Files are written whole or not at all (temp file + rename), so a failed export leaves no
half-written script behind.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2
from pydantic import BaseModel, ConfigDict, ValidationError

from netlab import __version__
from netlab.errors import NetlabError, TopologyError
from netlab.export import snapshot
from netlab.export.k8s import to_yaml
from netlab.export.kind import cluster_name, kind_cluster, kind_node_names
from netlab.export.manifests import BOOKINFO, manifests
from netlab.export.versions import KIND_RELEASE, IstioRelease, release
from netlab.linux.files import write_atomic
from netlab.topology.load import load_topology
from netlab.topology.model import Topology

EXPORT_SCHEMA_VERSION = 1
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("netlab.export", "templates"), undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
_TEMPLATES.filters["shq"] = lambda v: shlex.quote(str(v))


class _Info(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Request(_Info):
    """The request the lab runs (the seed's ``curl`` from sleep to productpage on bookinfo)."""

    namespace: str
    client: str
    url: str

    @property
    def describe(self) -> str:
        return f"{self.client} -> {self.url}"


class ExportedPod(_Info):
    name: str
    namespace: str
    ambient: bool  # enrolled, as the topology decides it (pod label, else namespace label)


class ExportedNode(_Info):
    node: str  # topology name
    kind_name: str  # the name kind gives the worker
    pod_cidr: str  # the topology's (the cluster may hand out another /24)
    pods: list[ExportedPod]


class ExportInfo(_Info):
    """``export.json``: what ``export kind`` wrote, for ``export observe`` to read back."""

    schema_version: int = EXPORT_SCHEMA_VERSION
    netlab_version: str = __version__
    topology: str
    cluster: str
    istio_minor: str
    istio_patch: str
    design: str
    nodes: list[ExportedNode]
    request: Request | None


def seed_request(topo: Topology) -> Request | None:
    """The first ``sleep`` pod to ``productpage`` (else the first service), on its first port.

    >>> from netlab.topology import load_topology
    >>> seed_request(load_topology("bookinfo")).url
    'http://productpage:9080/'
    """
    client = next((p for p in topo.pods if p.app == "sleep"), None)
    if client is None or not topo.services:
        return None
    svc = next((s for s in topo.services if s.name == "productpage"), topo.services[0])
    host = svc.name if svc.namespace == client.namespace else f"{svc.name}.{svc.namespace}"
    return Request(namespace=client.namespace, client=client.name, url=f"http://{host}:{svc.ports[0].port}/")


def export_info(topo: Topology, rel: IstioRelease) -> ExportInfo:
    names = kind_node_names(topo)
    nodes = [ExportedNode(node=n, kind_name=k, pod_cidr=str(topo.node(n).pod_cidr),
                          pods=[ExportedPod(name=p.name, namespace=p.namespace, ambient=topo.ambient(p))
                                for p in topo.pods if p.node == n])
             for n, k in names.items()]

    return ExportInfo(topology=topo.name, cluster=cluster_name(topo), istio_minor=rel.minor, istio_patch=rel.patch,
                      design=rel.design, nodes=nodes, request=seed_request(topo))


def _enrolled_waits(info: ExportInfo) -> list[tuple[str, str]]:
    """(namespace, label selector) covering every enrolled pod: one wait for a namespace whose pods
    are all enrolled, one per pod otherwise."""
    pods = [p for n in info.nodes for p in n.pods]
    waits = []
    for ns in dict.fromkeys(p.namespace for p in pods):
        mine = [p for p in pods if p.namespace == ns]
        if all(p.ambient for p in mine):
            waits.append((ns, "netlab/pod"))
        else:
            waits += [(ns, f"netlab/pod={p.name}") for p in mine if p.ambient]
    return waits


def _image_checks(topo: Topology, rel: IstioRelease) -> list[tuple[str, str]]:
    """(image, sample file in the release archive) for every sample image the manifests use."""
    checks: dict[str, str] = {}
    for p in topo.pods:
        if p.app in BOOKINFO:
            version = p.version if p.app == "reviews" else "v1"
            checks[rel.bookinfo_image(p.app, version)] = "samples/bookinfo/platform/kube/bookinfo.yaml"
        elif p.app == "sleep":
            checks[rel.sleep_image] = "samples/sleep/sleep.yaml"
    return sorted(checks.items())


def render_kind(topo: Topology, minor: str) -> dict[str, str]:
    """Every file of ``export kind``, path (relative to DIR) → text. Pure: nothing is written."""
    rel = release(minor)
    info = export_info(topo, rel)
    files = {"kind.yaml": to_yaml([kind_cluster(topo, node_image=rel.kind_node_image).dump()])}
    ns_files = []
    for m in manifests(topo, rel):
        files[f"manifests/{m.namespace}.yaml"] = m.render()
        ns_files.append(m.namespace)
    files["run.sh"] = _TEMPLATES.get_template("run.sh.j2").render(
        topology=topo.name, cluster=info.cluster, minor=rel.minor, patch=rel.patch, design=rel.design,
        node_image=rel.kind_node_image, kind_release=KIND_RELEASE, workers=info.nodes, namespaces=ns_files,
        image_checks=_image_checks(topo, rel), helm=rel.helm, istioctl_args=rel.istioctl_args, docs=rel.docs,
        helm_from_archive=any(a.startswith("manifests/") for s in rel.helm for a in s.args),
        enrolled_waits=_enrolled_waits(info),
        request=info.request)
    files["export.json"] = info.model_dump_json(indent=1) + "\n"
    return files


def render_observe(info: ExportInfo) -> dict[str, str]:
    script = _TEMPLATES.get_template("observe.sh.j2").render(
        topology=info.topology, cluster=info.cluster, minor=info.istio_minor, design=info.design,
        nodes=info.nodes, request=info.request, netlab_version=info.netlab_version)
    return {"observe.sh": script, "netlab_snapshot.py": Path(snapshot.__file__).read_text()}


def read_info(directory: Path) -> ExportInfo:
    path = directory / "export.json"
    try:
        return ExportInfo.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise TopologyError(f"{path}: no export here", hint=f"run `netlab export kind TOPOLOGY -o {directory}` first") \
            from None
    except ValidationError as e:
        raise TopologyError(f"{path}: not an export.json of this netlab ({e.error_count()} errors)") from None


def write_files(directory: Path, files: dict[str, str]) -> list[Path]:
    """Write each file atomically; scripts get mode 0755. Returns the paths written, sorted."""
    written = []
    for rel_path, text in sorted(files.items()):
        path = directory / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(str(path), text, mode=0o755 if path.suffix == ".sh" else 0o644)
        written.append(path)
    return written


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote, and what of the topology a real cluster will not reproduce."""

    directory: str
    files: list[str]
    cluster: str
    istio_version: str
    design: str
    notes: list[str]


def _notes(topo: Topology) -> list[str]:
    notes = []
    if topo.policies:
        notes.append(f"{len(topo.policies)} authorization policies are not exported (apply them as Istio "
                     "AuthorizationPolicy objects yourself)")
    notes.append("pod IPs and service VIPs are the cluster's own (kindnet and the API server allocate them)")
    return notes


def export_kind(topology: str, *, out: Path, istio_version: str, force: bool = False) -> ExportResult:
    """Write ``export kind``'s files for the topology file or shipped name ``topology`` into ``out``.

    Refuses a non-empty ``out`` that holds no earlier export (``force`` overrides), so an
    export never scatters files over an unrelated directory.
    """
    topo = load_topology(topology)
    if out.exists() and any(out.iterdir()) and not (out / "export.json").exists() and not force:
        raise NetlabError(f"{out} is not empty and holds no earlier export",
                          hint="choose an empty directory, or pass --force")
    files = render_kind(topo, istio_version)
    written = write_files(out, files)
    info = ExportInfo.model_validate_json(files["export.json"])
    return ExportResult(directory=str(out), files=[str(p) for p in written], cluster=info.cluster,
                        istio_version=info.istio_patch, design=info.design, notes=_notes(topo))


def export_observe(directory: Path) -> ExportResult:
    """Add ``observe.sh`` and ``netlab_snapshot.py`` to an ``export kind`` directory."""
    info = read_info(directory)
    written = write_files(directory, render_observe(info))
    return ExportResult(directory=str(directory), files=[str(p) for p in written], cluster=info.cluster,
                        istio_version=info.istio_patch, design=info.design, notes=[])
