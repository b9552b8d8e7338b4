"""Load a topology from YAML with errors that name the file, the line and the field.

PyYAML's composer keeps a start mark on every node; we walk the node tree once to map each
YAML path (``("pods", 3, "node")``) to its line, then translate pydantic's error locations
through that map. Any failure is a :class:`TopologyError` — never a traceback.
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from pydantic import ValidationError

from netlab.errors import TopologyError
from netlab.topology.model import LocatedError, Topology

Path = tuple[Any, ...]


def _lines(node: yaml.Node, path: Path, out: dict[Path, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _lines(v, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, (*path, i), out)


def _line_of(loc: Path, lines: dict[Path, int]) -> int | None:
    loc = tuple(x for x in loc if not (isinstance(x, str) and x.startswith(("function-", "json-or-python"))))
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def fmt_loc(loc: Path) -> str:
    out = ""
    for x in loc:
        out += f"[{x}]" if isinstance(x, int) else (f".{x}" if out else str(x))
    return out or "(top level)"


def errors_of(e: ValidationError) -> list[tuple[Path, str]]:
    """Each of pydantic's errors as (YAML path, message); a whole-model check that raised a
    :class:`LocatedError` contributes the path of the entry it is about."""
    out: list[tuple[Path, str]] = []
    for err in e.errors():
        loc = tuple(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, LocatedError):
            loc += cause.loc
        out.append((loc, err["msg"].removeprefix("Value error, ")))
    return out


def load_topology_text(text: str, source: str = "<string>", *, resolve: bool = True) -> Topology:
    """Parse and validate; ``source`` names the file in error messages.

    >>> t = load_topology_text("nodes: [{name: n1}]\\npods: [{name: a, node: n1}]")
    >>> str(t.pods[0].ip), str(t.nodes[0].pod_cidr)
    ('10.244.1.3', '10.244.1.0/24')
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TopologyError(f"{where}: invalid YAML: {problem}") from None
    if node is None or not isinstance(data, dict):
        raise TopologyError(f"{source}:1: a topology is a YAML mapping with at least 'nodes:'")
    lines: dict[Path, int] = {}
    _lines(node, (), lines)
    try:
        topo = Topology.model_validate(data)
    except ValidationError as e:
        raise TopologyError("; ".join(f"{source}:{_line_of(loc, lines)}: {fmt_loc(loc)}: {msg}"
                                      for loc, msg in errors_of(e))) from None
    if not resolve:
        return topo
    try:
        return topo.resolved()
    except LocatedError as e:
        raise TopologyError(f"{source}:{_line_of(e.loc, lines)}: {fmt_loc(e.loc)}: {e}") from None
    except ValueError as e:
        raise TopologyError(f"{source}: {e}") from None


def load_topology(path: str, *, resolve: bool = True) -> Topology:
    """Load ``path``; a bare name like ``bookinfo`` is looked up in the shipped topologies."""
    real = find_topology(path)
    try:
        with open(real, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise TopologyError(f"{path}: cannot read topology: {e.strerror}") from None
    return load_topology_text(text, real, resolve=resolve)


def shipped_dir() -> str:
    """The topologies shipped inside the package (``netlab/topologies/``, installed as package
    data), so a bare name works from any directory and from a non-editable install."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "topologies")


def shipped_names() -> list[str]:
    """``['bookinfo', 'minimal', 'scale']``: what a bare TOPOLOGY name may be."""
    try:
        return sorted(f.removesuffix(".yaml") for f in os.listdir(shipped_dir()) if f.endswith(".yaml"))
    except FileNotFoundError:
        return []


def find_topology(path: str) -> str:
    """A file path as given, else a shipped topology by bare name (``bookinfo`` or ``bookinfo.yaml``)."""
    if os.path.isfile(path):
        return path
    if os.sep not in path:
        base = path if path.endswith((".yaml", ".yml")) else path + ".yaml"
        cand = os.path.join(shipped_dir(), base)
        if os.path.isfile(cand):
            return cand
    raise TopologyError(f"{path}: no such topology file",
                        hint=f"give a YAML file, or a shipped topology: {', '.join(shipped_names())}")
