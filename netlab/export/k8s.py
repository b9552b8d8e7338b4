"""Typed models of the few Kubernetes objects an export writes (core/v1 and apps/v1).

Field names follow the Kubernetes API (camelCase on the wire, snake_case here through an alias
generator); unset optional fields are left out of the YAML. Only the fields netlab uses are
modelled, and ``extra="forbid"`` keeps a typo from becoming a silently ignored field; the tests
additionally validate every dumped object against Kubernetes' published OpenAPI schemas.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _K(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(_K):
    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class LabelSelector(_K):
    match_labels: dict[str, str]


class NodeSelectorRequirement(_K):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class NodeSelectorTerm(_K):
    match_expressions: list[NodeSelectorRequirement]


class NodeSelector(_K):
    node_selector_terms: list[NodeSelectorTerm]


class NodeAffinity(_K):
    required_during_scheduling_ignored_during_execution: NodeSelector


class Affinity(_K):
    node_affinity: NodeAffinity


class ContainerPort(_K):
    container_port: int
    name: str | None = None
    protocol: Literal["TCP", "UDP"] = "TCP"


class SecurityContext(_K):
    run_as_user: int | None = None


class HTTPGetAction(_K):
    path: str
    port: int


class Probe(_K):
    http_get: HTTPGetAction
    period_seconds: int = 2


class VolumeMount(_K):
    name: str
    mount_path: str


class EmptyDirVolumeSource(_K):
    pass


class Volume(_K):
    name: str
    empty_dir: EmptyDirVolumeSource


class EnvVar(_K):
    name: str
    value: str


class Container(_K):
    name: str
    image: str
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    ports: list[ContainerPort] | None = None
    readiness_probe: Probe | None = None
    security_context: SecurityContext | None = None
    volume_mounts: list[VolumeMount] | None = None


class PodSpec(_K):
    service_account_name: str
    containers: list[Container]
    affinity: Affinity | None = None
    termination_grace_period_seconds: int | None = None
    volumes: list[Volume] | None = None


class PodTemplateMeta(_K):
    """A pod template's metadata: labels only (the Deployment names its pods)."""

    labels: dict[str, str]


class PodTemplateSpec(_K):
    metadata: PodTemplateMeta
    spec: PodSpec


class DeploymentSpec(_K):
    replicas: int = 1
    selector: LabelSelector
    template: PodTemplateSpec


class Deployment(_K):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    metadata: ObjectMeta
    spec: DeploymentSpec


class Namespace(_K):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta


class ServiceAccount(_K):
    api_version: Literal["v1"] = "v1"
    kind: Literal["ServiceAccount"] = "ServiceAccount"
    metadata: ObjectMeta


class ServicePort(_K):
    name: str
    port: int
    target_port: int
    protocol: Literal["TCP", "UDP"] = "TCP"


class ServiceSpec(_K):
    selector: dict[str, str]
    ports: list[ServicePort]
    # the API spells it clusterIP, not what to_camel makes of cluster_ip
    cluster_ip: str | None = Field(default=None, alias="clusterIP")


class Service(_K):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    metadata: ObjectMeta
    spec: ServiceSpec


K8sObject = Namespace | ServiceAccount | Deployment | Service


class _Dumper(yaml.SafeDumper):
    """Block style, and no YAML aliases: the same dict reused in two places is written twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML stream, keys in the order the models declare them."""
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         explicit_start=True)
