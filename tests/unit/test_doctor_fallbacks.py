"""`netlab doctor` says, for each optional feature it can miss, what netlab does instead and what is lost."""

from __future__ import annotations

from netlab.apply.preflight import FALLBACKS, TOOLS, Check


def test_every_optional_check_has_a_fallback_and_a_loss() -> None:
    optional = {"link geneve", "link vxlan"} | {f"tool {t}" for t in ("tshark", "tcpdump", "conntrack")}
    assert set(FALLBACKS) == optional
    for name in optional:
        c = Check(name, False, "missing", required=False)
        assert c.instead and c.loses, name
    assert "conntrack" in TOOLS


def test_geneve_fallback_names_the_forwarder_and_what_differs() -> None:
    c = Check("link geneve", False, "not supported", required=False)
    assert "userspace Geneve forwarder" in c.instead and "VNI 1000/1001" in c.instead
    assert "tun, not geneve" in c.loses


def test_required_checks_have_no_fallback() -> None:
    assert Check("tool ip", False, "not found").instead == ""
