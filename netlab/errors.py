"""One error hierarchy; the CLI catches NetlabError only and prints one line.

Every class carries an ``exit_code`` and an optional ``hint`` (what to do), like h2 puts
an ``error_code`` on each exception class.
"""

from __future__ import annotations


class NetlabError(Exception):
    """Base of every error netlab reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class TopologyError(NetlabError):
    """A topology file or model is invalid (file, line and field are in the message)."""

    exit_code = 2


class PlanError(NetlabError):
    """A valid topology cannot be turned into kernel state (address clash, name too long...)."""

    exit_code = 3


class ApplyError(NetlabError):
    """The kernel refused an object; ``obj`` names the plan line, ``errno`` the reason."""

    exit_code = 4

    def __init__(self, message: str, *, obj: str | None = None, errno: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.obj = obj
        self.errno = errno


class ProcessError(NetlabError):
    """A lab process could not be started, stopped or reached."""

    exit_code = 5


class LabError(NetlabError):
    """Lab lifecycle refusal: unknown lab, name in use, not running, ambiguous default."""

    exit_code = 6


class PreflightError(NetlabError):
    """Missing privilege, kernel feature or tool (the hint says what to install)."""

    exit_code = 7


class ProtocolError(NetlabError):
    """A peer broke a protocol (ZDS, HBONE); ``code`` is the wire-level code if any."""

    exit_code = 8

    def __init__(self, message: str, *, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
