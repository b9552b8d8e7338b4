"""One supervisor per lab: starts, watches, restarts and stops every lab process.

It runs detached (its own session) in the root netns and never enters a lab netns itself:
each child enters its netns after fork. It records every child pid in ``<state>/pids/`` and
answers JSON requests on ``<state>/supervisor.sock`` (status, restart, stop, remove,
start, shutdown). A child that dies is restarted with backoff; SIGTERM stops them all.

Specs (``<state>/processes.json``) are :class:`netlab.runtime.spec.ProcessSpec`, read back
with its one constructor: ``name``, ``ns``, and either ``workload`` or ``argv``; ``env``,
``hosts``, ``comm``, ``ready`` (``pipe``: the child writes one line to fd
``NETLAB_READY_FD``; ``alive``).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from netlab import names
from netlab.linux import jsonline, proc
from netlab.runtime import workloads
from netlab.runtime.spec import ProcessSpec

log = logging.getLogger(__name__)
ALIVE_READY_S = 0.3
MAX_BACKOFF_S = 5.0


def log_name(name: str) -> str:
    return name.replace("/", ".") + ".log"


@dataclass
class Child:
    spec: ProcessSpec
    pid: int | None = None
    started: float = 0.0
    ready: bool = False
    restarts: int = 0
    ready_r: int | None = None
    stopped: bool = False  # stopped on request: not restarted
    next_start: float = 0.0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name


class Supervisor:
    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.dir = names.state_dir(lab)
        self.children: dict[str, Child] = {}
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        os.makedirs(os.path.join(self.dir, "pids"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)

    # -- children ------------------------------------------------------------------------

    def start(self, c: Child) -> None:
        spec = c.spec
        env = dict(spec.env)
        r = w = None
        if spec.ready == "pipe":
            r, w = os.pipe()
            os.set_inheritable(w, True)
            env["NETLAB_READY_FD"] = str(w)
        log_path = os.path.join(self.dir, "logs", log_name(c.name))
        target = None
        if spec.workload is not None:
            wl = spec.workload
            def target(wl=wl, w=w) -> None:
                workloads.main(wl.app, wl.pod, wl.port, wl.version, ready_fd=w)
        keep = (w,) if w is not None else ()
        pid = proc.spawn(spec.ns, log_path=log_path, target=target, argv=list(spec.argv) if spec.argv else None,
                         env=env, comm=spec.comm, hosts=spec.hosts, keep_fds=keep)
        if r is not None and w is not None:  # both or neither
            os.close(w)
            os.set_blocking(r, False)
            self.sel.register(r, selectors.EVENT_READ, ("ready", c.name))
        c.pid, c.started, c.ready, c.ready_r = pid, time.monotonic(), False, r
        with open(os.path.join(self.dir, "pids", log_name(c.name)[:-4] + ".pid"), "w") as f:
            f.write(f"{pid}\n")
        log.info("started %s pid %d in %s", c.name, pid, spec.ns)

    def _close_ready(self, c: Child) -> None:
        if c.ready_r is not None:
            try:
                self.sel.unregister(c.ready_r)
            except (KeyError, ValueError):
                pass
            os.close(c.ready_r)
            c.ready_r = None

    def stop_child(self, c: Child, timeout: float = 2.0) -> None:
        c.stopped = True
        if c.pid is None:
            return
        pid = c.pid
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        c.pid = None
        self._close_ready(c)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            for c in self.children.values():
                if c.pid == pid:
                    code = os.waitstatus_to_exitcode(status)
                    log.warning("%s (pid %d) exited with %d", c.name, pid, code)
                    c.exit_codes = (c.exit_codes + [code])[-5:]
                    c.pid = None
                    self._close_ready(c)
                    if not c.stopped and not self.stopping:
                        backoff = min(MAX_BACKOFF_S, 0.1 * (2 ** min(c.restarts, 6)))
                        c.next_start = time.monotonic() + backoff
                        c.restarts += 1

    def tick(self) -> None:
        now = time.monotonic()
        for c in self.children.values():
            if c.pid is None and not c.stopped and not self.stopping and now >= c.next_start:
                self.start(c)
            if c.pid is not None and not c.ready and c.spec.ready == "alive" \
                    and now - c.started >= ALIVE_READY_S:
                c.ready = True

    # -- control -------------------------------------------------------------------------

    def status(self) -> list[dict]:
        return [{"name": c.name, "pid": c.pid, "ns": c.spec.ns, "ready": c.ready, "restarts": c.restarts,
                 "stopped": c.stopped, "exit_codes": c.exit_codes} for c in self.children.values()]

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "status":
            return {"ok": True, "processes": self.status(), "pid": os.getpid()}
        if op in ("restart", "stop", "remove"):
            name = req.get("name")
            if name not in self.children:
                return {"ok": False, "error": f"no process {name!r} in lab {self.lab}"}
            assert isinstance(name, str)  # a key of self.children
            if op == "restart":
                c = self.children[name]
                self.stop_child(c)
                c.stopped = False
                c.restarts += 1
                self.start(c)
                return {"ok": True, "pid": c.pid}
            if op == "stop":
                self.stop_child(self.children[name])
                return {"ok": True}
            # remove: stop for good, the process is no longer part of the lab
            self.stop_child(self.children.pop(name))
            return {"ok": True}
        if op == "start":
            try:
                spec = ProcessSpec.from_json(req["spec"])
            except (KeyError, TypeError, ValueError) as e:
                return {"ok": False, "error": f"bad spec: {e}"}
            sc = self.children.get(spec.name)
            if sc is None:
                sc = self.children[spec.name] = Child(spec)
            sc.spec, sc.stopped = spec, False
            if sc.pid is None:
                self.start(sc)
            return {"ok": True, "pid": sc.pid}
        if op == "shutdown":
            self.stopping = True
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _on_client(self, conn: socket.socket) -> None:
        try:
            jsonline.serve_one(conn, self.handle)
        except OSError:
            pass
        finally:
            conn.close()

    # -- main loop -----------------------------------------------------------------------

    def run(self, specs: list[ProcessSpec]) -> None:
        sock_path = names.supervisor_socket(self.dir)
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(sock_path)
        srv.listen(64)
        srv.setblocking(False)
        self.sel.register(srv, selectors.EVENT_READ, ("accept", None))
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        self.sel.register(wake_r, selectors.EVENT_READ, ("signal", None))

        def on_term(signum, frame):
            self.stopping = True
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for spec in specs:
            c = self.children[spec.name] = Child(spec)
            self.start(c)
        # supervisor.pid is written once, by whoever spawned this process (it knows the pid
        # before a line of ours runs); the supervisor only removes it when it stops
        while not self.stopping:
            for key, _ in self.sel.select(timeout=0.1):
                kind, name = key.data
                if kind == "accept":
                    try:
                        conn, _ = srv.accept()
                    except BlockingIOError:
                        continue
                    self._on_client(conn)
                elif kind == "signal":
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif kind == "ready":
                    c = self.children[name]
                    try:
                        data = os.read(key.fd, 64)
                    except BlockingIOError:
                        continue
                    if data:
                        c.ready = True
                    self._close_ready(c)
            self.reap()
            self.tick()
        log.info("stopping %d processes", len(self.children))
        for c in reversed(list(self.children.values())):
            if c.pid is not None:
                try:
                    os.kill(c.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for c in reversed(list(self.children.values())):
            self.stop_child(c, timeout=2.0)
        srv.close()
        for p in (sock_path, names.supervisor_pid_path(self.dir)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def request(lab: str, req: dict, timeout: float = 10.0) -> dict:
    """Send one request to a lab's supervisor (raises OSError if it is not running)."""
    return jsonline.request(names.supervisor_socket(names.state_dir(lab)), req, timeout)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    lab = argv[0]
    d = names.state_dir(lab)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    with open(names.processes_path(d)) as f:
        specs = [ProcessSpec.from_json(s) for s in json.load(f)]
    Supervisor(lab).run(specs)


if __name__ == "__main__":
    main()
