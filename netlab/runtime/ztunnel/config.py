"""The ztunnel process configuration (JSON written by the lab).

``{"node", "mode": "node-routing"|"inpod", "registry", "certs_dir", "access_log": path|null,
"zds_socket": path|null, "trust_domain"}``; optional extras: ``metrics_port`` (15020),
``readiness_port`` (15021), ``mark`` (node-routing SO_MARK, 0x539; null = none), ``log_level``
(``debug``|``info``|``warn``|``error``, default ``info`` as ztunnel's; ``debug`` adds the
``connection opened`` access lines and debug logs on stderr), ``cert_ttl_seconds`` (lifetime
of the workload certificates ztunnel issues itself and renews at half-life; default 86400,
Istio's default workload certificate TTL).

>>> Config.from_dict({"node": "n1", "mode": "inpod", "registry": "/r.json", "certs_dir": "/c"}).trust_domain
'cluster.local'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from netlab.errors import NetlabError
from netlab.runtime.ztunnel.accesslog import DEFAULT_LEVEL, LEVELS
from netlab.runtime.ztunnel.certs import DEFAULT_TTL_SECONDS

MODES = ("node-routing", "inpod")


class ConfigError(NetlabError):
    """The ztunnel config file is missing or invalid."""


@dataclass(frozen=True, slots=True)
class Config:
    node: str
    mode: str
    registry: str
    certs_dir: str
    access_log: str | None = None
    zds_socket: str | None = None
    trust_domain: str = "cluster.local"
    metrics_port: int = 15020
    readiness_port: int = 15021
    mark: int | None = 0x539
    log_level: str = DEFAULT_LEVEL
    cert_ttl_seconds: float = DEFAULT_TTL_SECONDS

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        if not isinstance(d, dict):
            raise ConfigError("ztunnel config: top level must be an object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"ztunnel config: unknown keys {unknown}")
        for key in ("node", "mode", "registry", "certs_dir"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise ConfigError(f"ztunnel config: {key!r} is required (a non-empty string)")
        if d["mode"] not in MODES:
            raise ConfigError(f"ztunnel config: mode must be one of {MODES}, not {d['mode']!r}")
        if d.get("log_level", DEFAULT_LEVEL) not in LEVELS:
            raise ConfigError(f"ztunnel config: log_level must be one of {LEVELS}, not {d['log_level']!r}")
        ttl = d.get("cert_ttl_seconds", 1)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 1:
            raise ConfigError(f"ztunnel config: cert_ttl_seconds must be a number >= 1, not {ttl!r}")
        return cls(**d)

    @classmethod
    def load(cls, path: str) -> Config:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"ztunnel config {path}: {e}") from None
        return cls.from_dict(data)
