"""SIGINT, SIGTERM and SIGHUP during ``up``: the same rollback for all three.

A terminal's Ctrl-C, ``kill``/``timeout``/systemd's SIGTERM and a closed terminal's SIGHUP all
mean "stop and leave nothing": the handler only records the signal, and ``up`` checks the
record at the next object boundary (never inside a kernel call: pyroute2 creates a netns from
a helper process, and interrupting it there would let the netns appear after the rollback).
While the rollback runs, further signals are ignored so that it finishes. SIGKILL cannot be
caught; ``gc`` recognises the lab it leaves (``creating``, creator gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from netlab.errors import NetlabError

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(NetlabError):
    """``up`` stopped by a signal; exits 128 + the signal number, as a shell reports it."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def _in_forked_child(owner: int, signum: int) -> bool:
    """pyroute2 forks helper processes (netns creation, ``IPRoute(netns=...)``) that inherit
    Python's handlers, and ends them with SIGTERM. A handler of the CLI must not run in such a
    child (it would unwind a copy of the CLI: print, run ``finally`` blocks, remove netns):
    there the signal does what it does by default."""
    if os.getpid() == owner:
        return False
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True


class Recorder:
    """Installed for the whole of ``up``; ``check()`` at each boundary raises once signalled."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.armed = True  # False once the lab is up: a late signal no longer undoes it
        self.owner = os.getpid()

    def __call__(self, signum: int, frame: object) -> None:
        if _in_forked_child(self.owner, signum):
            return
        if self.armed:
            self.signals.append(signum)

    @property
    def signum(self) -> int | None:
        return self.signals[0] if self.signals else None

    def check(self) -> None:
        if self.signals:
            raise KeyboardInterrupt


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    rec = Recorder()
    old = {s: signal.signal(s, rec) for s in SIGNALS}
    try:
        yield rec
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """Rollback must finish: further signals are ignored while it runs."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def name(signum: int) -> str:
    return signal.Signals(signum).name


class SignalInterrupt(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside ``up``'s own handling: unwinds like Ctrl-C, remembers which."""

    def __init__(self, signum: int) -> None:
        super().__init__(name(signum))
        self.signum = signum


_CLI_PID = 0


def _raise(signum: int, frame: object) -> None:
    if _in_forked_child(_CLI_PID, signum):
        return
    raise SignalInterrupt(signum)


def install_cli_defaults() -> None:
    """For the whole CLI run: SIGTERM and SIGHUP unwind like Ctrl-C (``finally`` blocks run,
    one line is printed, exit 128 + n) instead of killing the process mid-step."""
    global _CLI_PID
    _CLI_PID = os.getpid()
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)
