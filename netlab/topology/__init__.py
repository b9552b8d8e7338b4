"""Topology layer: a lab described as plain data (pydantic), loaded from YAML or built in Python.

Pure: no kernel, no sockets, no subprocesses. It validates what a user wrote and resolves
defaults (addresses, replicas) so that the plan layer gets a complete, consistent model.
"""

from netlab.topology.builder import Topo
from netlab.topology.load import load_topology, load_topology_text
from netlab.topology.model import (
    AMBIENT_LABEL,
    AMBIENT_VALUE,
    Addressing,
    Namespace,
    Node,
    Pod,
    Policy,
    Service,
    ServicePort,
    Topology,
)

__all__ = [
    "AMBIENT_LABEL", "AMBIENT_VALUE", "Addressing", "Namespace", "Node", "Pod", "Policy",
    "Service", "ServicePort", "Topo", "Topology", "load_topology", "load_topology_text",
]
