"""A lab's lifecycle: ``up`` (plan -> apply -> processes -> ready), ``down`` and ``gc``.

``up`` of a fresh lab registers its undo before acting: any failure or Ctrl-C rolls the
whole lab back by marker (unless ``retain``). A second ``up`` of the same plan is a no-op;
of a different plan, a clear refusal. ``down`` and ``gc`` never need the record to be
intact: they find netns by name, processes by netns inode, files by marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from netlab import names
from netlab.apply import netns as netns_mod
from netlab.apply.kernel import apply_plan
from netlab.errors import LabError, NetlabError, PreflightError, ProcessError
from netlab.lab import interrupt, limits, specs
from netlab.lab.cleanup import DownResult, down, down_locked, gc, require_root
from netlab.lab.inventory import creator_alive, known_labs, lab_netns, supervisor_of
from netlab.lab.lock import lab_lock
from netlab.lab.mesh import mesh_readiness
from netlab.lab.state import LabRecord, UnreadableRecord, load_record, supervisor_pid, write_supervisor_pid
from netlab.linux import reaper
from netlab.plan import build_plan
from netlab.plan.build import check_options
from netlab.plan.objects import Plan
from netlab.runtime import supervisor
from netlab.runtime.spec import ProcessSpec
from netlab.topology import load_topology

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
# how long `up` waits for its processes (plus 0.1 s each) before it calls the start failed: a
# failure detector, not a goal (crash loops are caught at once by their restart count); on a
# busy shared machine (load 15 on 2 cores) an in-pod bookinfo took 22 s
START_TIMEOUT_S = 60.0


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
    recovered: bool = False  # the supervisor was gone and has been restarted in place


def plan_sha(plan: Plan) -> str:
    return hashlib.sha256(plan.render().encode()).hexdigest()


def resolve_encap(encap: str, mode: str) -> str:
    """``auto``: kernel geneve if this kernel can make a geneve link, else the userspace one."""
    if encap != "auto":
        return encap
    if mode != "node-routing":
        return "geneve-user"
    return "geneve" if kernel_has("geneve") else "geneve-user"


def kernel_has(kind: str) -> bool:
    """Try to make a ``kind`` link in a throw-away netns no lab member can be named
    (``nl-_probe-<pid>``), removed whatever happens."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    probe = names.probe_netns()
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
    check_options(lab=name, mode=mode, istio_version=istio_version, encap=encap)  # before any probe
    topo = load_topology(topology)
    lab = name or topo.name
    if encap == "auto":
        encap = resolve_encap(encap, mode) if probe else "geneve-user"
    return build_plan(topo, lab=lab, mode=mode, istio_version=istio_version, encap=encap)


def check_fd_budget(plan: Plan) -> None:
    """Refuse, before any object exists, a lab this process's open-file limit cannot hold."""
    per_node: dict[str, int] = {}
    for w in plan.registry.workloads:
        per_node[w.node] = per_node.get(w.node, 0) + 1
    b = limits.budget(len(plan.namespaces), max(per_node.values(), default=0), plan.mode == "inpod")
    if not b.ok:
        fit = limits.max_netns(b.hard) - (len(plan.namespaces) - len(plan.registry.workloads))
        raise PreflightError(
            f"lab {plan.lab!r} needs about {b.need} open files per process, the limit is {b.hard} "
            f"(ulimit -Hn): at most about {max(fit, 0)} pods fit, this topology has {len(plan.registry.workloads)}",
            hint="raise the hard limit (ulimit -Hn, or LimitNOFILE= for a service) or use fewer replicas")


def up(topology: str, *, name: str | None = None, mode: str = "node-routing", istio_version: str | None = None,
       encap: str = "auto", retain: bool = False, iptables_backend: str = "restore",
       progress: Progress = _noop, timeout: float | None = None) -> UpResult:
    """Stand a lab up, under its lock; SIGINT/SIGTERM/SIGHUP roll a fresh lab back."""
    t0 = time.monotonic()
    require_root()
    check_iptables_backend(iptables_backend)
    if mode != "none":
        specs.ztunnel_log_level()  # a bad $NETLAB_ZTUNNEL_LOG_LEVEL refuses the up, before any object
    limits.raise_nofile()
    # signals are recorded from here on (a probe's forked helper inherits the recorder, so it
    # cannot print an interruption of its own); each boundary turns one into the rollback
    with interrupt.recording() as sig:
        try:
            plan = make_plan(topology, name=name, mode=mode, istio_version=istio_version, encap=encap)
            sig.check()
            with lab_lock(plan.lab, "up"):
                return _up_locked(plan, topology, t0, sig, retain=retain, iptables_backend=iptables_backend,
                                  progress=progress, timeout=timeout)
        except KeyboardInterrupt:
            signum = sig.signum or signal.SIGINT
            raise interrupt.Interrupted(f"interrupted by {interrupt.name(signum)} before anything was built",
                                        signum) from None


def _up_locked(plan: Plan, topology: str, t0: float, sig: interrupt.Recorder, *, retain: bool,
               iptables_backend: str, progress: Progress, timeout: float | None) -> UpResult:
    lab = plan.lab
    sha = plan_sha(plan)
    try:
        rec = load_record(lab)
    except UnreadableRecord as e:
        raise LabError(e.message, hint=f"run `netlab down {lab}` first, or pick another --name") from None
    if rec is not None:
        if rec.plan_sha != sha:
            raise LabError(f"lab {lab!r} is already running with a different topology or mode "
                           f"({rec.topology}, {rec.mode})",
                           hint=f"run `netlab down {lab}` first, or pick another --name")
        if rec.state == "up":
            result = UpResult(lab, plan.mode, plan.istio_version, plan.encap, False, 0.0,
                              netns=len(plan.namespaces), processes=len(plan.processes))
            if supervisor_of(lab):
                return replace(result, seconds=time.monotonic() - t0)
            readopt(lab, progress=progress, timeout=timeout)
            return replace(result, changed=True, recovered=True, seconds=time.monotonic() - t0)
        if creator_alive(rec):
            raise LabError(f"lab {lab!r} is being created by pid {rec.creator_pid}",
                           hint="wait for it, or stop it (Ctrl-C or SIGTERM rolls it back)")
        raise LabError(f"lab {lab!r} was left half-built (state {rec.state}; its `up`, pid "
                       f"{rec.creator_pid}, is gone)", hint=f"run `netlab down {lab}` (or `netlab gc`) and try again")
    leftovers = lab_netns(lab)
    if leftovers:
        raise LabError(f"lab {lab!r} has leftovers from an earlier run ({len(leftovers)} netns)",
                       hint=f"run `netlab down {lab}`")
    check_fd_budget(plan)
    if plan.mode == "node-routing" and plan.encap in ("geneve", "vxlan") and not kernel_has(plan.encap):
        raise PreflightError(f"this kernel cannot create {plan.encap} links",
                             hint="use --encap geneve-user (the userspace Geneve forwarder) or --encap auto")
    state = names.state_dir(lab)

    def checked(stage: str, done: int, total: int) -> None:
        sig.check()
        progress(stage, done, total)

    record = LabRecord(
        lab=lab, topology=os.path.abspath(topology) if os.path.exists(topology) else topology, mode=plan.mode,
        istio_version=plan.istio_version, encap=plan.encap, plan_sha=sha, iptables_backend=iptables_backend,
        members={n.member: n.name for n in plan.namespaces},
        roles={n.member: n.role for n in plan.namespaces},
        pods={w.name: {"node": w.node, "ip": w.ip, "namespace": w.namespace, "ambient": w.hbone, "uid": w.pod_uid}
              for w in plan.registry.workloads},
        nodes=plan.nodes, created=time.time(),
        creator_pid=os.getpid(), creator_start=reaper.start_time(os.getpid()))
    try:
        os.makedirs(names.logs_dir(state), exist_ok=True)
        record.save()
        with open(os.path.join(state, "plan.txt"), "w") as f:
            f.write(plan.render())
        apply_plan(plan, progress=checked, iptables_backend=iptables_backend)
        record.netns = {n.name: netns_mod.inode(n.name) or 0 for n in plan.namespaces}
        record.save()
        sig.check()
        specs.prepare_mesh(plan, state)
        procs = specs.specs(plan, state, iptables_backend)
        start_supervisor(lab, procs)
        budget = timeout or (START_TIMEOUT_S + 0.1 * len(procs))
        wait_ready(lab, len(procs), progress=checked, timeout=budget)
        if plan.mode == "inpod":
            wait_mesh(lab, progress=checked, timeout=budget)
        checked("ready", 1, 1)
        sig.armed = False  # the lab is up: a signal from now on does not undo it
        record.state = "up"
        record.save()
    except BaseException as e:
        if not retain:
            with interrupt.ignored():
                progress("rollback", 0, 1)
                down_locked(lab)
        kept = "kept (--retain)" if retain else "rolled back"
        if isinstance(e, KeyboardInterrupt) or sig.signals:
            signum = sig.signum or signal.SIGINT
            raise interrupt.Interrupted(f"interrupted by {interrupt.name(signum)}: lab {lab!r} {kept}", signum) from None
        if isinstance(e, OSError) and not isinstance(e, NetlabError):  # a full or read-only state dir...
            where = f" ({e.filename})" if e.filename else ""
            raise LabError(f"lab {lab!r} {kept}: {e.strerror or e}{where}",
                           hint=f"check free space and permissions of {names.STATE_ROOT}") from None
        raise
    return UpResult(lab, plan.mode, plan.istio_version, plan.encap, True, time.monotonic() - t0,
                    netns=len(plan.namespaces), processes=len(plan.processes))


def start_supervisor(lab: str, procs: list[ProcessSpec] | None = None) -> int:
    """Spawn the lab's supervisor (``procs`` written first; None: the specs already saved)."""
    state = names.state_dir(lab)
    if procs is not None:
        with open(names.processes_path(state), "w") as f:
            json.dump([p.to_json() for p in procs], f, indent=1)
    logf = open(os.path.join(names.logs_dir(state), "supervisor.log"), "ab")
    try:
        p = subprocess.Popen([sys.executable, "-m", supervisor.__name__, lab], stdin=subprocess.DEVNULL,
                             stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
    finally:
        logf.close()
    write_supervisor_pid(lab, p.pid)
    return p.pid


def readopt(lab: str, *, progress: Progress = _noop, timeout: float | None = None) -> None:
    """A lab whose supervisor died: its processes run on unsupervised (nothing restarts them,
    ``restart`` has nobody to ask). Stop those orphans (found by netns inode, as ``down``
    does) and start a new supervisor from the saved specs: the lab is supervised again, in
    place, with its netns and rules untouched."""
    state = names.state_dir(lab)
    with open(names.processes_path(state)) as f:
        count = len(json.load(f))
    rec = load_record(lab)
    inodes = {i for i in (netns_mod.inode(n) for n in lab_netns(lab, rec)) if i}
    reaper.terminate(reaper.pids_in(inodes))
    start_supervisor(lab)
    budget = timeout or (START_TIMEOUT_S + 0.1 * count)
    wait_ready(lab, count, progress=progress, timeout=budget)
    if rec is not None and rec.mode == "inpod":
        wait_mesh(lab, progress=progress, timeout=budget)


def wait_ready(lab: str, count: int, *, progress: Progress = _noop, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    last: list[dict] = []
    pid = supervisor_pid(lab)
    while time.monotonic() < deadline:
        if pid and not reaper.alive(pid):
            raise ProcessError(f"lab {lab}: the supervisor exited during start-up",
                               hint=f"see {names.logs_dir(names.state_dir(lab))}/supervisor.log")
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
                               hint=f"see {names.logs_dir(names.state_dir(lab))}/{supervisor.log_name(p['name'])}")
        time.sleep(0.05)
    waiting = [p["name"] for p in last if not p["ready"]]
    raise ProcessError(f"lab {lab}: processes not ready after {timeout:.0f}s: {', '.join(waiting[:5]) or '?'}")


def wait_mesh(lab: str, *, progress: Progress = _noop, timeout: float = 30.0) -> None:
    """In-pod: wait until ztunnel has acknowledged every enrolled pod over ZDS, as Istio's CNI
    plugin holds each pod's start until then; before the ack the pod's traffic is redirected
    to listeners that do not exist yet (connection refused)."""
    deadline = time.monotonic() + timeout
    while True:
        m = mesh_readiness(lab)
        progress("mesh", len(m.ready), len(m.ready) + len(m.waiting))
        if not m.waiting:
            return
        if time.monotonic() >= deadline:
            raise ProcessError(f"lab {lab}: ztunnel has not acknowledged {len(m.waiting)} pods after "
                               f"{timeout:.0f}s: {', '.join(m.waiting[:5])}",
                               hint=f"see {names.logs_dir(names.state_dir(lab))}/ for the cni-agent and ztunnel logs")
        time.sleep(0.05)


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


__all__ = ["DownResult", "NetlabError", "UpResult", "default_lab", "down", "gc", "known_labs", "lab_netns",
           "require_root", "up"]
