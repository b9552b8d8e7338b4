"""ztunnel's Prometheus counters (served on :15020 ``/metrics`` and ``/stats/prometheus``).

Istio's TCP metric names, counted per reporter: ``source`` for what the outbound proxy
(15001) carried, ``destination`` for the inbound proxies (15006, 15008).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable


class Metrics:
    """Prometheus counters, by reporter (source = outbound, destination = inbound)."""

    def __init__(self) -> None:
        self.opened: collections.Counter[str] = collections.Counter()
        self.closed: collections.Counter[str] = collections.Counter()
        self.sent: collections.Counter[str] = collections.Counter()
        self.recv: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()

    def render(self, unlabelled: Iterable[tuple[str, str, int]] = ()) -> str:
        """Prometheus text: the per-reporter counters, then ``(name, help, value)`` counters that
        have no reporter (netlab's own, e.g. certificate rotations)."""
        out = []
        for name, help_, c in (
            ("istio_tcp_connections_opened_total", "TCP connections opened", self.opened),
            ("istio_tcp_connections_closed_total", "TCP connections closed", self.closed),
            ("istio_tcp_sent_bytes_total", "Bytes sent toward the peer", self.sent),
            ("istio_tcp_received_bytes_total", "Bytes received from the peer", self.recv),
            ("istio_tcp_connections_failed_total", "Connections closed with an error", self.failed),
        ):
            out.append(f"# HELP {name} {help_}.")
            out.append(f"# TYPE {name} counter")
            for reporter in ("source", "destination"):
                out.append(f'{name}{{reporter="{reporter}"}} {c[reporter]}')
        for name, help_, value in unlabelled:
            out += [f"# HELP {name} {help_}.", f"# TYPE {name} counter", f"{name} {value}"]
        return "\n".join(out) + "\n"
