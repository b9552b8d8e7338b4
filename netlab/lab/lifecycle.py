"""A lab's lifecycle: ``up`` (plan -> apply -> processes -> ready), ``down`` and ``gc``.

``up`` of a fresh lab registers its undo before acting: any failure or Ctrl-C rolls the
whole lab back by marker (unless ``retain``). A second ``up`` of the same plan is a no-op;
of a different plan, a clear refusal. ``down`` and ``gc`` never need the record to be
intact: they find netns by name, processes by netns inode, files by marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from netlab import names
from netlab.apply import hosts as hosts_mod
from netlab.apply import netns as netns_mod
from netlab.apply.kernel import apply_plan
from netlab.errors import LabError, NetlabError, PreflightError, ProcessError
from netlab.lab import specs
from netlab.lab.state import LabRecord, load_record, remove_state, state_labs, supervisor_pid
from netlab.linux import reaper
from netlab.plan import build_plan
from netlab.plan.objects import Plan
from netlab.runtime import supervisor
from netlab.topology import load_topology

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class UpResult:
    lab: str
    mode: str
    istio_version: str | None
    encap: str | None
    changed: bool
    seconds: float
    plan_text: str = ""
    netns: int = 0
    processes: int = 0


@dataclass(frozen=True)
class DownResult:
    lab: str
    netns_removed: list[str] = field(default_factory=list)
    processes_stopped: list[int] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def require_root() -> None:
    if os.geteuid() != 0:
        raise PreflightError("netlab needs root to create network namespaces",
                             hint="run it with sudo (or as root); `netlab up --dry-run` works without")


def known_labs() -> list[str]:
    """Labs with a state dir or an underlay netns (``nl-<lab>-net``) — markers only."""
    labs = set(state_labs())
    for n in netns_mod.list_netns():
        if n.endswith("-net"):
            labs.add(n[len(names.MARKER):-len("-net")])
    return sorted(labs)


def lab_netns(lab: str) -> list[str]:
    """Every netns of ``lab`` by its marker, minus those of a longer lab name sharing the prefix."""
    others = _longer_prefixes(lab)
    return [n for n in netns_mod.list_netns(names.netns(lab, "")) if not any(n.startswith(o) for o in others)]


def _longer_prefixes(lab: str) -> list[str]:
    """Marker prefixes of other labs whose names start with ``lab-`` (lab "a" vs lab "a-b")."""
    prefix = names.netns(lab, "")
    return [names.netns(x, "") for x in known_labs() if x != lab and names.netns(x, "").startswith(prefix)]


def plan_sha(plan: Plan) -> str:
    return hashlib.sha256(plan.render().encode()).hexdigest()


def resolve_encap(encap: str, mode: str, lab: str) -> str:
    """``auto``: kernel geneve if this kernel can make a geneve link, else the userspace one."""
    if encap != "auto":
        return encap
    if mode != "node-routing":
        return "geneve-user"
    return "geneve" if kernel_has("geneve", lab) else "geneve-user"


def kernel_has(kind: str, lab: str = "probe") -> bool:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    probe = names.netns(lab, "probe")
    netns_mod.create(probe)
    try:
        with IPRoute(netns=probe) as ipr:
            kw = {"geneve": {"geneve_id": 1, "geneve_remote": "127.0.0.2"},
                  "vxlan": {"vxlan_id": 1, "vxlan_group": "127.0.0.2", "vxlan_port": 4789}}.get(kind, {})
            try:
                ipr.link("add", ifname="probe0", kind=kind, **kw)
                return True
            except NetlinkError:
                return False
    finally:
        netns_mod.remove(probe)


def check_iptables_backend(backend: str) -> None:
    from netlab.apply.iptables import BACKENDS

    if backend not in BACKENDS:
        raise PreflightError(f"unknown iptables backend {backend!r} (choose {' or '.join(BACKENDS)})")
    if backend == "python-iptables":
        try:
            import iptc  # noqa: F401 - loads libiptc/libxtables
        except Exception as e:  # a missing shared library surfaces as any of several errors
            raise PreflightError(f"python-iptables cannot load libiptc: {e}",
                                 hint="install iptables (libip4tc) and `pip install python-iptables`") from None


def make_plan(topology: str, *, name: str | None, mode: str, istio_version: str | None, encap: str,
              probe: bool = True) -> Plan:
    topo = load_topology(topology)
    lab = name or topo.name
    if encap == "auto":
        encap = resolve_encap(encap, mode, lab) if probe else "geneve-user"
    return build_plan(topo, lab=lab, mode=mode, istio_version=istio_version, encap=encap)


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    """Rollback must finish: a second Ctrl-C is ignored while it runs."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def up(topology: str, *, name: str | None = None, mode: str = "node-routing", istio_version: str | None = None,
       encap: str = "auto", retain: bool = False, iptables_backend: str = "restore",
       progress: Progress = _noop, timeout: float | None = None) -> UpResult:
    t0 = time.monotonic()
    require_root()
    check_iptables_backend(iptables_backend)
    if mode != "none":
        specs.ztunnel_log_level()  # a bad $NETLAB_ZTUNNEL_LOG_LEVEL refuses the up, before any object
    plan = make_plan(topology, name=name, mode=mode, istio_version=istio_version, encap=encap)
    lab = plan.lab
    sha = plan_sha(plan)
    rec = load_record(lab)
    if rec is not None:
        if rec.plan_sha == sha and rec.state == "up" and _supervisor_alive(lab):
            return UpResult(lab, plan.mode, plan.istio_version, plan.encap, False, time.monotonic() - t0,
                            netns=len(plan.namespaces), processes=len(plan.processes))
        if rec.plan_sha != sha:
            raise LabError(f"lab {lab!r} is already running with a different topology or mode "
                           f"({rec.topology}, {rec.mode})",
                           hint=f"run `netlab down {lab}` first, or pick another --name")
        raise LabError(f"lab {lab!r} exists but is not healthy (state {rec.state})",
                       hint=f"run `netlab down {lab}` and try again")
    leftovers = lab_netns(lab)
    if leftovers:
        raise LabError(f"lab {lab!r} has leftovers from an earlier run ({len(leftovers)} netns)",
                       hint="run `netlab gc` (or `netlab down " + lab + "`)")
    if mode == "node-routing" and plan.encap in ("geneve", "vxlan") and not kernel_has(plan.encap, lab):
        raise PreflightError(f"this kernel cannot create {plan.encap} links",
                             hint="use --encap geneve-user (the userspace Geneve forwarder) or --encap auto")
    state = names.state_dir(lab)
    # Ctrl-C stops a fresh `up` at the next object boundary, never inside a kernel call:
    # pyroute2 creates a netns from a helper process, and interrupting it there would let the
    # netns appear after the rollback. The handler only records; every boundary re-raises.
    interrupted: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(signum)

    def checked(stage: str, done: int, total: int) -> None:
        if interrupted:
            raise KeyboardInterrupt
        progress(stage, done, total)

    old_handler = signal.signal(signal.SIGINT, on_sigint)
    record = LabRecord(
        lab=lab, topology=os.path.abspath(topology) if os.path.exists(topology) else topology, mode=plan.mode,
        istio_version=plan.istio_version, encap=plan.encap, plan_sha=sha, iptables_backend=iptables_backend,
        members={n.member: n.name for n in plan.namespaces},
        roles={n.member: n.role for n in plan.namespaces},
        pods={w.name: {"node": w.node, "ip": w.ip, "namespace": w.namespace, "ambient": w.hbone, "uid": w.pod_uid}
              for w in plan.registry.workloads},
        nodes=plan.nodes,
        created=time.time())
    try:
        os.makedirs(os.path.join(state, "logs"), exist_ok=True)
        record.save()
        with open(os.path.join(state, "plan.txt"), "w") as f:
            f.write(plan.render())
        apply_plan(plan, progress=checked, iptables_backend=iptables_backend)
        record.netns = {n.name: netns_mod.inode(n.name) or 0 for n in plan.namespaces}
        record.save()
        specs.prepare_mesh(plan, state)
        procs = specs.specs(plan, state, iptables_backend)
        start_supervisor(lab, procs)
        wait_ready(lab, len(procs), progress=checked,
                   timeout=timeout or (20.0 + 0.1 * len(procs)))
        checked("ready", 1, 1)
        record.state = "up"
        record.save()
    except BaseException as e:
        if not retain:
            with _no_sigint():
                progress("rollback", 0, 1)
                down(lab)
        if isinstance(e, KeyboardInterrupt) or interrupted:
            raise LabError(f"interrupted: lab {lab!r} " + ("kept (--retain)" if retain else "rolled back"),
                           hint=None) from None
        raise
    finally:
        signal.signal(signal.SIGINT, old_handler)
    return UpResult(lab, plan.mode, plan.istio_version, plan.encap, True, time.monotonic() - t0,
                    netns=len(plan.namespaces), processes=len(plan.processes))


def start_supervisor(lab: str, procs: list[dict]) -> int:
    import json

    state = names.state_dir(lab)
    with open(os.path.join(state, "processes.json"), "w") as f:
        json.dump(procs, f, indent=1)
    logf = open(os.path.join(state, "logs", "supervisor.log"), "ab")
    try:
        p = subprocess.Popen([sys.executable, "-m", "netlab.runtime.supervisor", lab], stdin=subprocess.DEVNULL,
                             stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
    finally:
        logf.close()
    with open(os.path.join(state, "supervisor.pid"), "w") as f:
        f.write(f"{p.pid}\n")
    return p.pid


def wait_ready(lab: str, count: int, *, progress: Progress = _noop, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    last: list[dict] = []
    pid = supervisor_pid(lab)
    while time.monotonic() < deadline:
        if pid and not reaper.alive(pid):
            raise ProcessError(f"lab {lab}: the supervisor exited during start-up",
                               hint=f"see {names.state_dir(lab)}/logs/supervisor.log")
        try:
            st = supervisor.request(lab, {"op": "status"}, timeout=2)
        except OSError:
            time.sleep(0.05)
            continue
        last = st["processes"]
        ready = sum(1 for p in last if p["ready"])
        progress("processes", ready, count)
        if ready >= count:
            return last
        crashing = [p for p in last if p["restarts"] >= 3 and not p["ready"]]
        if crashing:
            p = crashing[0]
            raise ProcessError(f"lab {lab}: {p['name']} keeps exiting (codes {p['exit_codes']})",
                               hint=f"see {names.state_dir(lab)}/logs/{supervisor.log_name(p['name'])}")
        time.sleep(0.05)
    waiting = [p["name"] for p in last if not p["ready"]]
    raise ProcessError(f"lab {lab}: processes not ready after {timeout:.0f}s: {', '.join(waiting[:5]) or '?'}")


def _supervisor_alive(lab: str) -> bool:
    pid = supervisor_pid(lab)
    return bool(pid and reaper.alive(pid) and "netlab.runtime.supervisor" in " ".join(reaper.cmdline(pid)))


def down(lab: str) -> DownResult:
    """Remove everything of ``lab``: processes, netns, hosts files, state. Safe to repeat."""
    t0 = time.monotonic()
    require_root()
    if lab not in known_labs() and not lab_netns(lab) and not hosts_mod.lab_hosts_dirs(names.netns(lab, "")):
        raise LabError(f"no lab named {lab!r}", hint="`netlab status` lists the labs")
    stopped: list[int] = []
    pid = supervisor_pid(lab)
    if pid and _supervisor_alive(lab):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 6
        while reaper.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if reaper.alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(pid)
    nss = lab_netns(lab)
    inodes = {i for i in (netns_mod.inode(n) for n in nss) if i}
    try:
        rec = load_record(lab)
    except LabError:  # an unreadable record must not stop the teardown
        rec = None
    if rec:
        inodes |= {i for i in rec.netns.values() if i}
    # one /proc scan: threads in a lab netns, or an fd on one (recorded pids are found this way
    # too, and a recorded pid that left the lab's netns is somebody else's process by now)
    victims = reaper.pids_in(inodes, {os.path.join(d, n) for n in nss for d in ("/run/netns", "/var/run/netns")})
    stopped += sorted(reaper.terminate(victims))
    for n in nss:
        netns_mod.remove(n)
    files = []
    longer = _longer_prefixes(lab)
    for d in hosts_mod.lab_hosts_dirs(names.netns(lab, "")):
        if not any(d.startswith(o) for o in longer):
            hosts_mod.remove_hosts(d)
            files.append(os.path.join(names.ETC_NETNS, d))
    if os.path.isdir(names.state_dir(lab)):
        remove_state(lab)
        files.append(names.state_dir(lab))
    return DownResult(lab, nss, stopped, files, time.monotonic() - t0)


def gc() -> list[DownResult]:
    """Remove labs whose supervisor is gone (crash, kill -9, reboot of the supervisor)."""
    require_root()
    out = []
    for lab in known_labs():
        if not _supervisor_alive(lab):
            out.append(down(lab))
    # hosts dirs whose netns is gone and that no lab claims
    for d in hosts_mod.lab_hosts_dirs(names.MARKER):
        if not os.path.exists(os.path.join("/var/run/netns", d)):
            hosts_mod.remove_hosts(d)
            out.append(DownResult(d, files_removed=[os.path.join(names.ETC_NETNS, d)]))
    return out


def default_lab(lab: str | None) -> str:
    if lab:
        return lab
    labs = known_labs()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise LabError("no lab is running", hint="start one with `netlab up TOPOLOGY`")
    raise LabError(f"several labs are running ({', '.join(labs)}): name one")


def record_of(lab: str) -> LabRecord:
    rec = load_record(lab)
    if rec is None:
        raise LabError(f"no lab named {lab!r}", hint="`netlab status` lists the labs")
    return rec


def target_netns(lab: str, target: str) -> str:
    rec = record_of(lab)
    if target in rec.members:
        return rec.members[target]
    raise LabError(f"lab {lab}: no node or pod named {target!r}",
                   hint="targets: " + ", ".join(sorted(k for k in rec.members if k != "net")))


__all__ = ["DownResult", "NetlabError", "UpResult", "default_lab", "down", "gc", "known_labs", "up"]
