"""export: the same topology on a real Kubernetes cluster (kind) with real Istio ambient.

``netlab export kind`` turns a topology into a kind cluster config, Kubernetes manifests, the
Istio install commands of one release and a ``run.sh`` that stands it all up; ``netlab export
observe`` writes a script that collects, from that real cluster, the kernel views netlab shows
for a lab, in the JSON shape of ``netlab report`` (see :mod:`netlab.export.snapshot`).

This layer reads the topology model only. It never runs a container, a cluster or a command:
it writes files. Everything it writes is built from typed models (pydantic for the Kubernetes
and kind objects, dumped with PyYAML; jinja2 templates for the shell scripts), never by
concatenating YAML text.
"""
