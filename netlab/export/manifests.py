"""Kubernetes objects for a topology: namespaces, service accounts, Deployments, Services.

Each topology pod becomes a one-replica Deployment of the same name (``replicas: N`` in the
topology has already been expanded into pods ``name-0`` … by the loader, each on its node), its
pods carrying the topology's labels plus ``netlab/pod=<name>`` so that Deployments that share an
``app`` label (reviews v1/v2/v3) keep disjoint selectors. Pods are pinned to their topology node
with a required node affinity on the ``netlab/node`` label the kind config puts on each worker.

Images: the apps of Istio's bookinfo sample run the sample's own images at the chosen Istio
release (``examples-bookinfo-<app>-<version>``, with the volumes and env of the sample's
``bookinfo.yaml``), ``sleep`` runs the sleep sample (``curlimages/curl`` sleeping forever), and
``echo`` runs a small HTTP echo server on the pod's port. What netlab cannot carry over: fixed
pod IPs (kindnet allocates them) and service VIPs (``10.96.0.10`` is kube-dns on kind, and the
API server allocates the rest), so both are left to the cluster; ``observe.sh`` records them.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.export import k8s
from netlab.export.kind import NODE_LABEL
from netlab.export.versions import ECHO_IMAGE, IstioRelease
from netlab.topology.model import Pod, Service, Topology

POD_LABEL = "netlab/pod"
BOOKINFO = ("productpage", "details", "reviews", "ratings")


@dataclass(frozen=True)
class NamespaceManifest:
    """Everything of one namespace, in apply order (namespace first, services last)."""

    namespace: str
    objects: tuple[k8s.K8sObject, ...]

    def render(self) -> str:
        return k8s.to_yaml([o.dump() for o in self.objects])


def _affinity(node: str) -> k8s.Affinity:
    req = k8s.NodeSelectorRequirement(key=NODE_LABEL, operator="In", values=[node])
    sel = k8s.NodeSelector(node_selector_terms=[k8s.NodeSelectorTerm(match_expressions=[req])])
    return k8s.Affinity(node_affinity=k8s.NodeAffinity(required_during_scheduling_ignored_during_execution=sel))


def _container(pod: Pod, rel: IstioRelease) -> tuple[k8s.Container, list[k8s.Volume]]:
    """The container of one pod, as Istio's samples (or the echo image) run it."""
    http = [k8s.ContainerPort(container_port=pod.port, name="http")]
    if pod.app == "sleep":
        return k8s.Container(name="sleep", image=rel.sleep_image, command=["/bin/sleep", "infinity"]), []
    if pod.app == "echo":
        return k8s.Container(name="echo", image=ECHO_IMAGE, args=[f"-listen=:{pod.port}", f"-text={pod.name}"],
                             ports=http), []
    # bookinfo: the sample's images listen on 9080 whatever the topology says
    version = pod.version if pod.app == "reviews" else "v1"
    image = rel.bookinfo_image(pod.app, version)
    ports = [k8s.ContainerPort(container_port=9080)]
    tmp = k8s.Volume(name="tmp", empty_dir=k8s.EmptyDirVolumeSource())
    if pod.app == "productpage":
        return k8s.Container(name="productpage", image=image, ports=ports,
                             volume_mounts=[k8s.VolumeMount(name="tmp", mount_path="/tmp")]), [tmp]
    if pod.app == "reviews":
        wlp = k8s.Volume(name="wlp-output", empty_dir=k8s.EmptyDirVolumeSource())
        return k8s.Container(name="reviews", image=image, ports=ports,
                             env=[k8s.EnvVar(name="LOG_DIR", value="/tmp/logs")],
                             volume_mounts=[k8s.VolumeMount(name="tmp", mount_path="/tmp"),
                                            k8s.VolumeMount(name="wlp-output", mount_path="/opt/ibm/wlp/output")]
                             ), [wlp, tmp]
    return k8s.Container(name=pod.app, image=image, ports=ports), []


def deployment(pod: Pod, rel: IstioRelease) -> k8s.Deployment:
    labels = {**pod.labels, POD_LABEL: pod.name}
    container, volumes = _container(pod, rel)
    spec = k8s.PodSpec(service_account_name=pod.sa, containers=[container], affinity=_affinity(pod.node),
                       termination_grace_period_seconds=0 if pod.app == "sleep" else None,
                       volumes=volumes or None)
    return k8s.Deployment(
        metadata=k8s.ObjectMeta(name=pod.name, namespace=pod.namespace, labels=labels),
        spec=k8s.DeploymentSpec(selector=k8s.LabelSelector(match_labels={POD_LABEL: pod.name}),
                                template=k8s.PodTemplateSpec(metadata=k8s.PodTemplateMeta(labels=labels),
                                                             spec=spec)))


def service(svc: Service) -> k8s.Service:
    many = len(svc.ports) > 1
    ports = [k8s.ServicePort(name=p.name or (f"http-{p.port}" if many else "http"), port=p.port,
                             target_port=p.target) for p in svc.ports]
    return k8s.Service(metadata=k8s.ObjectMeta(name=svc.name, namespace=svc.namespace,
                                               labels={"app": svc.name, "service": svc.name}),
                       spec=k8s.ServiceSpec(selector=dict(svc.selector), ports=ports))


def manifests(topo: Topology, rel: IstioRelease) -> list[NamespaceManifest]:
    """One manifest per namespace of a resolved topology, in the topology's namespace order."""
    out = []
    for ns in topo.namespaces:
        pods = [p for p in topo.pods if p.namespace == ns.name]
        objs: list[k8s.K8sObject] = [k8s.Namespace(metadata=k8s.ObjectMeta(name=ns.name,
                                                                             labels=dict(ns.labels) or None))]
        for sa in dict.fromkeys(p.sa for p in pods):
            objs.append(k8s.ServiceAccount(metadata=k8s.ObjectMeta(name=sa, namespace=ns.name)))
        objs += [deployment(p, rel) for p in pods]
        objs += [service(s) for s in topo.services if s.namespace == ns.name]
        out.append(NamespaceManifest(ns.name, tuple(objs)))
    return out
