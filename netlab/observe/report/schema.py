"""The report's data: one pydantic model per thing measured, serialised as ``report.json``.

``SCHEMA_VERSION`` changes whenever a field changes meaning or goes away, so ``--compare`` can
refuse a file it would misread. The path, hop and trace types are the observe layer's own
(:mod:`netlab.observe.model`), so the report carries exactly what ``netlab capture`` and
``netlab trace`` print.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from netlab.observe.model import Path, RouteDecision, RuleMatch

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listener(_Model):
    """One listening TCP socket, and the lab process that owns it."""

    address: str
    port: int
    owner: str  # lab process name (``ztunnel/ambient-worker``), else the command name
    pid: int | None


class NetnsObjects(_Model):
    """The kernel objects of one netns, counted the way ``netlab show`` prints them."""

    member: str  # TARGET name: node, pod, ztunnel-<node>, or ``net`` (the underlay)
    netns: str
    role: str  # underlay | node | pod | ztunnel
    node: str | None
    ip_rules: int
    routes: dict[str, int]  # table -> routes (local table left out, as ``netlab show`` does)
    ipset_members: dict[str, int]  # set name -> members
    iptables: dict[str, dict[str, int]]  # table -> chain -> rules (chains with rules only)
    links: list[str]
    listeners: list[Listener]
    lines: dict[str, list[str]] = Field(default_factory=dict)  # kind -> object lines (for diffs)

    @property
    def iptables_rules(self) -> int:
        return sum(sum(c.values()) for c in self.iptables.values())

    @property
    def route_count(self) -> int:
        return sum(self.routes.values())

    @property
    def ipset_count(self) -> int:
        return sum(self.ipset_members.values())


class Latency(_Model):
    """N requests, each on a new connection (``Connection: close``), one after another."""

    url: str
    requests: int
    ok: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    requests_per_s: float  # N / the sum of the requests' times: one client, sequential
    response_bytes: int  # body bytes of the last response


class Bulk(_Model):
    """One iperf3 transfer of ``bytes`` from the client pod to the server pod."""

    server: str
    bytes: int
    seconds: float
    mbit_s: float
    retransmits: int | None


class Ratios(_Model):
    """This design's figure divided by the no-mesh baseline's, from the same run."""

    p50: float | None
    p99: float | None
    requests_per_s: float | None
    bulk_mbit_s: float | None


class ObjectChange(_Model):
    member: str
    kind: str  # rules | routes | ipset | iptables | links | listeners
    line: str


class Enrollment(_Model):
    """What enrolling one pod at run time changed in the kernel, and how long it took."""

    pod: str
    seconds: float  # the enroll call: node-routing's kernel writes, inpod's CNI agent round trip
    ready_seconds: float | None  # until ztunnel listened for the pod (inpod), else None
    added: list[ObjectChange]
    removed: list[ObjectChange]


class LegBytes(_Model):
    """Bytes of one leg on the wire at one hop, and what of it is encapsulation."""

    leg: int
    hop: int  # 1-based position in the path's hop order
    netns: str
    member: str  # the lab TARGET owning the netns (pod, node, ztunnel-<node>, net)
    device: str
    encap: str
    vni: int | None
    packets: int
    wire_bytes: int  # frames as captured, both directions
    payload_fwd: int  # TCP payload client -> server of this leg
    payload_rev: int  # TCP payload server -> client
    overhead_bytes: int  # Geneve hops: the outer headers; others: Ethernet + IP + TCP headers
    overhead_per_packet: float


class PathReport(_Model):
    """One request end to end, as hop reconstruction gave it, with its counts and diagram."""

    path: Path
    hops: int
    netns_crossings: int
    ztunnel_traversals: int
    bytes: list[LegBytes]
    access_log_bytes: dict[str, int]  # "<ztunnel> <direction> sent|recv" -> bytes, from the access log
    hbone_framing_bytes: int | None  # TLS + HTTP/2 on the HBONE leg: its TCP payload minus the app bytes
    svg: str


class Phase(_Model):
    name: str
    seconds: float


class DesignRun(_Model):
    """Everything measured for one design, in one lab that lived only for this run."""

    design: str  # none | node-routing | inpod
    lab: str
    istio_version: str | None
    encap: str | None
    phases: list[Phase]
    latency: Latency
    bulk: Bulk | None
    ratios: Ratios | None  # None for the baseline itself, or when no baseline ran
    objects: list[NetnsObjects]
    path: PathReport | None
    trace: list[RuleMatch | RouteDecision] | None
    enrollment: Enrollment | None
    pcaps: list[str]  # relative to the report directory
    notes: list[str] = Field(default_factory=list)  # what could not be measured, and why


class Scenario(_Model):
    topology: str
    client: str
    url: str
    requests: int
    bulk_mib: int


class Report(_Model):
    schema_version: int = SCHEMA_VERSION
    netlab_version: str
    created: str  # RFC 3339 UTC
    host: str  # kernel release and CPU count, so two runs' figures can be weighed
    scenario: Scenario
    designs: list[DesignRun]
    seconds: float
