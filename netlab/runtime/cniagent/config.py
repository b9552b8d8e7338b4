"""The CNI agent's configuration: ``<state>/cni-<node>.json``, written by the lab, read by the agent.

One typed model for both ends (:class:`AgentConfig`): the lab builds it from the plan
(:func:`netlab.runtime.cniagent.agent.write_config`) and the agent validates it at start, so a
missing or misspelt field is one clear error instead of a ``KeyError`` in a running agent.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PodEntry(_Model):
    """One pod of the agent's node, as the plan knows it."""

    name: str
    namespace: str
    uid: str  # the Kubernetes pod UID ZDS carries
    ip: str
    netns: str
    ambient: bool  # enrolled at lab start
    service_account: str


class AgentConfig(_Model):
    lab: str
    node: str
    version: str  # the Istio version whose in-pod rules the agent writes
    dns: bool = False  # DNS capture rules (ISTIO_META_DNS_CAPTURE)
    node_netns: str
    zds_socket: str  # where ztunnel connects (ZDS)
    plugin_socket: str  # where `netlab enroll`/`unenroll` ask (JSON lines)
    enrolled_file: str | None = None  # run-time enrollment, kept across agent restarts
    trust_domain: str = "cluster.local"
    pods: tuple[PodEntry, ...] = ()

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> AgentConfig:
        """Raises ``pydantic.ValidationError`` (a ``ValueError``) naming the bad field."""
        return cls.model_validate_json(text)
