"""Build a topology in Python, mininet ``Topo`` style; it produces the same model as YAML.

>>> t = (Topo("demo").node("n1").node("n2").namespace("default", ambient=True)
...      .pod("client", node="n1", app="sleep").pod("web", node="n2", app="echo", labels={"app": "web"})
...      .service("web", selector={"app": "web"}, ports=[9080]).build())
>>> [(p.name, str(p.ip)) for p in t.pods]
[('client', '10.244.1.3'), ('web', '10.244.2.3')]
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from netlab.errors import TopologyError
from netlab.topology.load import errors_of, fmt_loc
from netlab.topology.model import AMBIENT_LABEL, AMBIENT_VALUE, LocatedError, Topology


class Topo:
    def __init__(self, name: str = "lab", **addressing: Any) -> None:
        self._d: dict[str, Any] = {"name": name, "nodes": [], "namespaces": [], "pods": [],
                                   "services": [], "policies": []}
        if addressing:
            self._d["addressing"] = addressing

    def node(self, name: str, **kw: Any) -> Topo:
        self._d["nodes"].append({"name": name, **kw})
        return self

    def namespace(self, name: str, *, ambient: bool = False, labels: dict[str, str] | None = None) -> Topo:
        lab = dict(labels or {})
        if ambient:
            lab[AMBIENT_LABEL] = AMBIENT_VALUE
        self._d["namespaces"].append({"name": name, "labels": lab})
        return self

    def pod(self, name: str, *, node: str, **kw: Any) -> Topo:
        self._d["pods"].append({"name": name, "node": node, **kw})
        return self

    def service(self, name: str, *, selector: dict[str, str], ports: list[Any], **kw: Any) -> Topo:
        self._d["services"].append({"name": name, "selector": selector, "ports": ports, **kw})
        return self

    def policy(self, name: str, **kw: Any) -> Topo:
        self._d["policies"].append({"name": name, **kw})
        return self

    def build(self) -> Topology:
        try:
            return Topology.model_validate(self._d).resolved()
        except ValidationError as e:
            raise TopologyError(f"topology {self._d['name']!r}: "
                                + "; ".join(f"{fmt_loc(loc)}: {msg}" for loc, msg in errors_of(e))) from None
        except LocatedError as e:
            raise TopologyError(f"topology {self._d['name']!r}: {fmt_loc(e.loc)}: {e}") from None
        except ValueError as e:
            raise TopologyError(f"topology {self._d['name']!r}: {e}") from None
