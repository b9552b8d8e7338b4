"""ztunnel's modules import each other plainly, so a broken one stops ztunnel at start.

Before, the in-pod server imported its ZDS client lazily inside ``except ImportError``: when
that import broke, ztunnel logged one line, reported ready, and never received a pod.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# A meta-path finder that makes one module fail to import, as a syntax error or a missing
# dependency inside it would.
_BREAK = textwrap.dedent("""
    import importlib.abc, sys
    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == {name!r}:
                raise ImportError("broken on purpose: " + name)
            return None
    sys.meta_path.insert(0, Broken())
""")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_a_broken_zds_client_stops_ztunnel_from_starting() -> None:
    code = _BREAK.format(name="netlab.runtime.ztunnel.zds_client") + textwrap.dedent("""
        from netlab.runtime.ztunnel.server import main
        main(["--config", "/nonexistent"])
    """)
    r = _python(code)
    assert r.returncode != 0
    assert "ImportError: broken on purpose: netlab.runtime.ztunnel.zds_client" in r.stderr


def test_the_zds_modules_import_alone_without_a_cycle() -> None:
    """Each imports alone in a fresh interpreter (a cycle shows as a partially initialised module)."""
    for mod in ("zds_client", "podmanager", "listeners", "proxy", "h2conn", "metrics", "server"):
        r = _python(f"import netlab.runtime.ztunnel.{mod}")
        assert r.returncode == 0, f"{mod}: {r.stderr}"
