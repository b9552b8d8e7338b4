"""netlab: Istio ambient mode's traffic redirection, rebuilt from Linux network namespaces.

Layers, each a package, imports only pointing down:
topology -> plan -> apply -> runtime -> observe, with ``cli`` thin on top.
"""

__version__ = "0.1.0"
