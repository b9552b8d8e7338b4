"""ztunnel's /metrics text: Prometheus exposition format, per-reporter and unlabelled counters."""

from __future__ import annotations

import re

from netlab.runtime.ztunnel.metrics import Metrics


def test_render_reporters_and_unlabelled_counters() -> None:
    m = Metrics()
    m.opened["source"] += 3
    m.sent["destination"] += 1234
    text = m.render([("netlab_ztunnel_cert_rotations_total", "Workload certificates renewed before expiry", 2)])
    lines = text.splitlines()
    assert 'istio_tcp_connections_opened_total{reporter="source"} 3' in lines
    assert 'istio_tcp_connections_opened_total{reporter="destination"} 0' in lines
    assert 'istio_tcp_sent_bytes_total{reporter="destination"} 1234' in lines
    assert lines[-3:] == ["# HELP netlab_ztunnel_cert_rotations_total Workload certificates renewed before expiry.",
                          "# TYPE netlab_ztunnel_cert_rotations_total counter",
                          "netlab_ztunnel_cert_rotations_total 2"]
    # every sample belongs to a family announced by HELP and TYPE counter just before it
    family = None
    for ln in lines:
        if ln.startswith("# HELP "):
            family = ln.split()[2]
        elif ln.startswith("# TYPE "):
            assert ln == f"# TYPE {family} counter"
        else:
            assert re.fullmatch(rf'{family}(\{{reporter="(source|destination)"\}})? \d+', ln), ln
    assert text.endswith("\n")
