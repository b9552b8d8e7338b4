"""Start one process inside a lab netns, the way ``ip netns exec`` would, from a fork.

The child moves itself (it is single-threaded right after fork) into the pod's netns, takes
a private mount namespace and bind-mounts the lab hosts file over /etc/hosts, exactly as
``ip netns exec`` does. Workloads then run Python in the child (no interpreter start-up per
pod: lab start stays near-linear and fast); other programs are exec'd.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

from netlab import names
from netlab.linux import nsenter

MS_REC, MS_PRIVATE, MS_BIND = 0x4000, 1 << 18, 0x1000
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount(src: str | None, target: str, fstype: str | None, flags: int) -> None:
    if _libc.mount(src.encode() if src else None, target.encode(), fstype.encode() if fstype else None,
                   ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def set_comm(name: str) -> None:
    """What ``ps``/``ss -p`` show for the process (16 bytes incl. NUL)."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def enter(ns: str, *, hosts: bool = True) -> None:
    """In a fresh child: join ``ns`` and see its hosts file as /etc/hosts."""
    fd = nsenter.open_netns(ns)
    nsenter.setns(fd, nsenter.CLONE_NEWNET)
    os.close(fd)
    hosts_file = os.path.join(names.etc_netns_dir(ns), "hosts")
    if hosts and os.path.exists(hosts_file):
        nsenter.unshare(nsenter.CLONE_NEWNS)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount(hosts_file, "/etc/hosts", None, MS_BIND)


def spawn(ns: str, *, log_path: str, target: Callable[[], None] | None = None,
          argv: list[str] | None = None, env: dict[str, str] | None = None, comm: str | None = None,
          hosts: bool = True, keep_fds: tuple[int, ...] = ()) -> int:
    """Fork a child in ``ns`` that runs ``target()`` or execs ``argv``; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        os.setpgid(0, 0)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        low = 3  # close everything inherited but the fds we were asked to keep
        for keep in sorted(keep_fds):
            os.closerange(low, keep)
            low = keep + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        enter(ns, hosts=hosts)
        if comm:
            set_comm(comm)
        if env:
            os.environ.update(env)
        if argv:
            os.execvpe(argv[0], argv, os.environ)
        assert target is not None
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        target()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 - the child must never return into the parent's code
        try:
            os.write(2, f"netlab: child in {ns} failed: {e!r}\n".encode())
        except OSError:
            pass
        code = 127
    os._exit(code)
