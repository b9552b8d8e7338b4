"""What differs between the three Istio releases an export can target: 1.20, 1.22, 1.24.

One frozen :class:`IstioRelease` per minor version holds everything the export writes that
depends on it: the patch release downloaded, the redirection design it runs (node-routing in
1.20, in-pod from 1.21), the Kubernetes version of the kind node image (inside the release's
supported range), the images of Istio's own samples at that release, and the exact install
commands of that release's documentation.

Sources, per release (read from istio.io's versioned pages and istio/istio's samples):

* install with istioctl: ``istio.io/v1.20/docs/ops/ambient/getting-started`` (the ``ambient``
  profile, which in 1.20 installs istiod, istio-cni with the ambient controller and ztunnel);
  ``istio.io/v1.22/docs/ambient/install/istioctl`` and ``istio.io/v1.24/docs/ambient/install/istioctl``
  (``--set profile=ambient --skip-confirmation``).
* install with Helm: 1.20 passes the release archive's values files
  (``manifests/charts/istio-cni/ambient-values.yaml``,
  ``manifests/charts/istio-control/istio-discovery/ambient-values.yaml``) and waits for nothing;
  1.22 sets ``profile=ambient`` on the cni and istiod charts and installs cni before istiod, each
  with ``--wait``; 1.24 installs istiod before cni (``istio.io/v1.24/docs/ambient/install/helm``).
* images: ``samples/bookinfo/platform/kube/bookinfo.yaml`` (``docker.io/istio/examples-bookinfo-*``)
  and ``samples/sleep/sleep.yaml`` (``curlimages/curl``, command ``/bin/sleep infinity``) of each
  release. ``run.sh`` re-checks the bookinfo tags against the downloaded release's own
  ``bookinfo.yaml`` before applying anything, so a mismatch is reported, not silently deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Design = Literal["node-routing", "inpod"]

#: A small HTTP echo server for the topology's non-bookinfo apps (``echo``): one static binary,
#: answers every path with ``-text`` on ``-listen``.
ECHO_IMAGE = "hashicorp/http-echo:1.0"
#: The Kubernetes version whose published OpenAPI schemas the tests validate every manifest with.
SCHEMA_KUBERNETES = "1.31.0"
#: The kind release whose node images the ``KIND_NODE_IMAGE`` defaults name (its release notes list
#: each image with the digest it must be pulled by).
KIND_RELEASE = "v0.25.0"


@dataclass(frozen=True)
class HelmStep:
    """One ``helm install`` of the release's documented sequence."""

    release: str
    chart: str
    namespace: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class IstioRelease:
    minor: str
    patch: str
    design: Design
    kubernetes: str  # the kind node image's Kubernetes version, inside the release's support range
    kind_digest: str  # kind's release notes: pull the image by digest to get the one built for that kind
    bookinfo_tag: str
    sleep_image: str
    istioctl_args: tuple[str, ...]
    helm: tuple[HelmStep, ...]
    docs: str

    @property
    def kind_node_image(self) -> str:
        return f"kindest/node:v{self.kubernetes}@sha256:{self.kind_digest}"

    def bookinfo_image(self, service: str, version: str) -> str:
        return f"docker.io/istio/examples-bookinfo-{service}-{version}:{self.bookinfo_tag}"


_BASE = HelmStep("istio-base", "istio/base", "istio-system", ("--create-namespace",))
_ZTUNNEL = HelmStep("ztunnel", "istio/ztunnel", "istio-system")

RELEASES: dict[str, IstioRelease] = {
    "1.20": IstioRelease(
        minor="1.20", patch="1.20.8", design="node-routing", kubernetes="1.28.15",
        kind_digest="a7c05c7ae043a0b8c818f5a06188bc2c4098f6cb59ca7d1856df00375d839251",
        bookinfo_tag="1.18.0", sleep_image="curlimages/curl",
        istioctl_args=("install", "--set", "profile=ambient", "--skip-confirmation"),
        helm=(_BASE,
              HelmStep("istio-cni", "istio/cni", "istio-system",
                       ("-f", "manifests/charts/istio-cni/ambient-values.yaml")),
              HelmStep("istiod", "istio/istiod", "istio-system",
                       ("-f", "manifests/charts/istio-control/istio-discovery/ambient-values.yaml")),
              _ZTUNNEL),
        docs="https://istio.io/v1.20/docs/ops/ambient/getting-started/"),
    "1.22": IstioRelease(
        minor="1.22", patch="1.22.8", design="inpod", kubernetes="1.30.6",
        kind_digest="b6d08db72079ba5ae1f4a88a09025c0a904af3b52387643c285442afb05ab994",
        bookinfo_tag="1.19.1", sleep_image="curlimages/curl",
        istioctl_args=("install", "--set", "profile=ambient", "--skip-confirmation"),
        helm=(HelmStep("istio-base", "istio/base", "istio-system", ("--create-namespace", "--wait")),
              HelmStep("istio-cni", "istio/cni", "istio-system", ("--set", "profile=ambient", "--wait")),
              HelmStep("istiod", "istio/istiod", "istio-system", ("--set", "profile=ambient", "--wait")),
              HelmStep("ztunnel", "istio/ztunnel", "istio-system", ("--wait",))),
        docs="https://istio.io/v1.22/docs/ambient/install/istioctl/"),
    "1.24": IstioRelease(
        minor="1.24", patch="1.24.6", design="inpod", kubernetes="1.31.2",
        kind_digest="18fbefc20a7113353c7b75b5c869d7145a6abd6269154825872dc59c1329912e",
        bookinfo_tag="1.20.2", sleep_image="curlimages/curl",
        istioctl_args=("install", "--set", "profile=ambient", "--skip-confirmation"),
        helm=(HelmStep("istio-base", "istio/base", "istio-system", ("--create-namespace", "--wait")),
              HelmStep("istiod", "istio/istiod", "istio-system", ("--set", "profile=ambient", "--wait")),
              HelmStep("istio-cni", "istio/cni", "istio-system", ("--set", "profile=ambient", "--wait")),
              HelmStep("ztunnel", "istio/ztunnel", "istio-system", ("--wait",))),
        docs="https://istio.io/v1.24/docs/ambient/install/istioctl/"),
}
DEFAULT_VERSION = "1.20"  # the design `netlab up` defaults to (node-routing)


def release(minor: str) -> IstioRelease:
    """The release record of ``minor`` ("1.20", "1.22" or "1.24"); KeyError otherwise.

    >>> release("1.20").design, release("1.24").design
    ('node-routing', 'inpod')
    """
    return RELEASES[minor]
