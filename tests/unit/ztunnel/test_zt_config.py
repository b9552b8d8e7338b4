"""The ztunnel config: log level and certificate TTL knobs."""

from __future__ import annotations

import pytest

from netlab import names
from netlab.plan.registry import RegistryDoc
from netlab.runtime.ztunnel.config import Config, ConfigError

BASE = {"node": "n1", "mode": "inpod", "registry": "/r.json", "certs_dir": "/c"}


def test_defaults_info_and_one_day() -> None:
    """ztunnel's default level (info) and Istio's default workload certificate TTL (24 h)."""
    c = Config.from_dict(BASE)
    assert (c.log_level, c.cert_ttl_seconds) == ("info", 86400)


def test_knobs_accepted() -> None:
    c = Config.from_dict(BASE | {"log_level": "debug", "cert_ttl_seconds": 4})
    assert (c.log_level, c.cert_ttl_seconds) == ("debug", 4)


@pytest.mark.parametrize("extra,msg", [
    ({"log_level": "trace"}, "log_level must be one of"),
    ({"log_level": "DEBUG"}, "log_level must be one of"),
    ({"cert_ttl_seconds": 0}, "cert_ttl_seconds must be a number >= 1"),
    ({"cert_ttl_seconds": "60"}, "cert_ttl_seconds must be a number >= 1"),
    ({"cert_ttl_seconds": True}, "cert_ttl_seconds must be a number >= 1"),
], ids=["unknown-level", "uppercase-level", "zero-ttl", "string-ttl", "bool-ttl"])
def test_bad_knobs_are_clear_errors(extra: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        Config.from_dict(BASE | extra)


@pytest.mark.parametrize("env,level", [(None, "info"), ("debug", "debug"), ("warn", "warn")],
                         ids=["default", "debug", "warn"])
def test_lab_spec_writes_log_level(tmp_path, monkeypatch, env: str | None, level: str) -> None:
    """`NETLAB_ZTUNNEL_LOG_LEVEL=debug netlab up ...` reaches each ztunnel's config; the file loads."""
    import json
    from types import SimpleNamespace

    from netlab.lab import specs
    from netlab.plan.objects import Process

    if env is None:
        monkeypatch.delenv(specs.ZTUNNEL_LOG_LEVEL_ENV, raising=False)
    else:
        monkeypatch.setenv(specs.ZTUNNEL_LOG_LEVEL_ENV, env)
    p = Process("ztunnel/n1", "ztunnel", names.netns("zf", "ztunnel-n1"), (("mode", "inpod"), ("node", "n1")))
    spec = specs.spec(SimpleNamespace(registry=RegistryDoc()), p, str(tmp_path))
    path = spec.argv[spec.argv.index("--config") + 1]
    assert json.loads(open(path).read())["log_level"] == level
    assert Config.load(path).log_level == level


def test_lab_spec_refuses_bad_log_level(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    from netlab.errors import PreflightError
    from netlab.lab import specs
    from netlab.plan.objects import Process

    monkeypatch.setenv(specs.ZTUNNEL_LOG_LEVEL_ENV, "verbose")
    p = Process("ztunnel/n1", "ztunnel", names.netns("zf", "ztunnel-n1"), (("mode", "inpod"), ("node", "n1")))
    with pytest.raises(PreflightError, match="NETLAB_ZTUNNEL_LOG_LEVEL='verbose': must be one of debug, info"):
        specs.spec(SimpleNamespace(registry=RegistryDoc()), p, str(tmp_path))
