"""sysctls of a lab netns: written with only this thread inside the netns.

``/proc/sys/net`` resolves to the netns of the *thread* that opens the file, so switching
the thread (not the process) is enough and the root netns is never written.
"""

from __future__ import annotations

import logging

from netlab.errors import ApplyError
from netlab.linux import nsenter
from netlab.plan.objects import Sysctl

log = logging.getLogger(__name__)


def apply_sysctls(ns: str, sysctls: tuple[Sysctl, ...] | list[Sysctl]) -> None:
    if not sysctls:
        return
    with nsenter.netns(ns):
        for s in sysctls:
            log.debug("%s: %s", ns, s.render())
            try:
                with open(s.path, "w") as f:
                    f.write(s.value)
            except OSError as e:
                raise ApplyError(f"{ns}: {s.render()}: {e.strerror}", obj=s.render(), errno=e.errno) from None
