"""The Vagrantfile is valid for vagrant (when Debian's vagrant is installed; no hypervisor here, so
provider blocks are not validated: --ignore-provider) and provisions with
the same install script as CI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_vagrantfile_provisions_with_install_sh_on_debian_12() -> None:
    text = (ROOT / "Vagrantfile").read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text
    assert "bash scripts/install.sh" in text and "modprobe geneve" in text


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="vagrant is not installed (Debian 12 packages it: apt-get install vagrant; "
                           "scripts/install.sh installs it where apt has it)")
def test_vagrant_validate(tmp_path: Path) -> None:
    p = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path),
                            "VAGRANT_HOME": str(tmp_path / ".vagrant.d"), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot")})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Vagrantfile validated successfully" in p.stdout
