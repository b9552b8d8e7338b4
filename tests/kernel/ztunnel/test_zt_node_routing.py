"""ztunnel end to end in node-routing mode: real netns, TPROXY, two ztunnel processes, HBONE mTLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ztlab import A_IP, CLIENT_IP, LOCAL_IP, SERVER_IP, VIP, Ztunnel, connect, http_get, registry_doc

from netlab.linux import nsenter

pytestmark = pytest.mark.root

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
ECHO = "spiffe://cluster.local/ns/default/sa/echo"
STAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
LINE_RE = re.compile(STAMP + r"\t(info|error)\taccess\tconnection complete\t(.*)$")
FAILED_RE = re.compile(STAMP + r"\t(warn)\taccess\tconnection failed\t(.*)$")
OPENED_RE = re.compile(STAMP + r"\t(debug)\taccess\tconnection opened\t(.*)$")


def fields(line: str, regex: re.Pattern = LINE_RE) -> dict[str, str]:
    m = regex.match(line)
    assert m, line
    out = {"level": m.group(1)}
    for k, v in re.findall(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S+)', m.group(2)):
        out[k] = v.strip('"')
    return out


def failed(zt: Ztunnel, pred: callable) -> dict[str, str]:
    """The one ``connection failed`` line matching ``pred``: exactly src.addr, dst.addr, direction, error."""
    lines = zt.wait_events("connection failed", pred)
    assert len(lines) == 1, (lines, zt.all_lines()[-6:])
    f = fields(lines[0], FAILED_RE)
    assert list(f) == ["level", "src.addr", "dst.addr", "direction", "error"], lines[0]
    return f


def by_port(port: int, key: str = "src.addr") -> callable:
    return lambda ln: f"{key}={CLIENT_IP}:{port} " in ln


def expect_reset(ns: str, ip: str, port: int, send: bytes = b"") -> int:
    """Connect (the ztunnel accepts first) and expect a RST; returns the client's port."""
    with nsenter.netns(ns):
        s = socket.socket()
    s.settimeout(10)
    s.bind((CLIENT_IP, 0))
    local_port = s.getsockname()[1]
    try:
        with pytest.raises(ConnectionResetError):
            s.connect((ip, port))
            if send:
                s.sendall(send)
            s.recv(10)
            s.recv(10)
    finally:
        s.close()
    return local_port


def echo_roundtrip(ns: str, ip: str, port: int, payload: bytes) -> tuple[bytes, int]:
    s = connect(ns, ip, port)
    try:
        local_port = s.getsockname()[1]
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = bytearray()
        while chunk := s.recv(262144):
            out += chunk
        return bytes(out), local_port
    finally:
        s.close()


def test_hbone_end_to_end_via_service_vip(lab: dict) -> None:
    """client -> VIP:80 -> ztunnel A (TPROXY 15001) -> HBONE mTLS -> ztunnel B -> echo:9000; logs on both sides."""
    names, zt = lab["names"], lab["zt"]
    payload = os.urandom(100_000)
    mb = zt["b"].mark()
    got, port = echo_roundtrip(names["c"], VIP, 80, payload)
    assert got == payload
    out = zt["a"].wait_lines(by_port(port))
    inb = zt["b"].wait_lines(since=mb)
    assert len(out) == 1 and len(inb) == 1, (zt["a"].lines(), zt["b"].lines())
    o, i = fields(out[0]), fields(inb[0])
    assert o == {"level": "info", "src.addr": f"{CLIENT_IP}:{port}", "src.workload": "sleep", "src.namespace": "default",
                 "src.identity": SLEEP, "dst.addr": f"{SERVER_IP}:15008", "dst.hbone_addr": f"{VIP}:80",
                 "dst.service": "echo.default.svc.cluster.local", "dst.workload": "echo", "dst.namespace": "default",
                 "dst.identity": ECHO, "direction": "outbound", "bytes_sent": "100000", "bytes_recv": "100000",
                 "duration": o["duration"]}
    assert i["src.addr"].startswith(f"{CLIENT_IP}:")  # the HBONE connection's (spoofed) source
    assert i == {"level": "info", "src.addr": i["src.addr"], "src.workload": "sleep", "src.namespace": "default",
                 "src.identity": SLEEP, "dst.addr": f"{SERVER_IP}:15008", "dst.hbone_addr": f"{SERVER_IP}:9000",
                 "dst.service": "echo.default.svc.cluster.local", "dst.workload": "echo", "dst.namespace": "default",
                 "dst.identity": ECHO, "direction": "inbound", "bytes_sent": "100000", "bytes_recv": "100000",
                 "duration": i["duration"]}
    assert re.fullmatch(r"\d+ms", o["duration"])
    # exact key order of ztunnel's access log (1.22+)
    keys = [kv.split("=", 1)[0] for kv in out[0].split("\t")[4].split(" ")]
    assert keys == ["src.addr", "src.workload", "src.namespace", "src.identity", "dst.addr", "dst.hbone_addr",
                    "dst.service", "dst.workload", "dst.namespace", "dst.identity", "direction", "bytes_sent",
                    "bytes_recv", "duration"]


def test_ztunnels_run_the_lean_data_path(lab: dict) -> None:
    """Each ztunnel's start-up check found h2 as h2lean expects it: DATA frames take the lean path."""
    for z in lab["zt"].values():
        text = (Path(z.log_path).parent / "stderr.log").read_text()
        assert re.search(r"ready \(mode node-routing, pid \d+, HTTP/2: h2 [\d.]+, lean DATA path on\)", text), text


def test_half_close_keeps_other_direction(lab: dict) -> None:
    """Client shuts down its write side; the server still answers after seeing EOF."""
    names, zt = lab["names"], lab["zt"]
    got, port = echo_roundtrip(names["c"], SERVER_IP, 9002, b"x" * 12345)
    assert got == b"got 12345\n"
    o = fields(zt["a"].wait_lines(by_port(port))[0])
    assert (o["bytes_sent"], o["bytes_recv"], o["level"]) == ("12345", "10", "info")


def test_policy_deny_gives_401_and_reset(lab: dict) -> None:
    """A DENY policy for sleep on echo:9001: B answers 401, A resets the client, both log why."""
    names, zt = lab["names"], lab["zt"]
    mb = zt["b"].mark()
    port = expect_reset(names["c"], SERVER_IP, 9001, b"hi")
    o = fields(zt["a"].wait_lines(by_port(port))[0])
    # by port: the previous test's inbound line may land after the mark (B logs after handing on EOF)
    i = fields(zt["b"].wait_lines(lambda ln: f"dst.hbone_addr={SERVER_IP}:9001 " in ln, since=mb)[0])
    assert o["level"] == "error" and o["error"] == "http status: 401 Unauthorized"
    assert i["level"] == "error" and "policy rejection: default/deny-sleep-9001" in i["error"]
    fo = failed(zt["a"], by_port(port))
    assert fo == {"level": "warn", "src.addr": f"{CLIENT_IP}:{port}", "dst.addr": f"{SERVER_IP}:15008",
                  "direction": "outbound", "error": "http status: 401 Unauthorized"}
    fi = failed(zt["b"], lambda ln: f'src.addr={i["src.addr"]} ' in ln and "policy rejection" in ln)
    assert fi["direction"] == "inbound" and fi["error"] == i["error"] and fi["dst.addr"] == f"{SERVER_IP}:15008"


def test_closed_port_resets_client_and_logs_reason(lab: dict) -> None:
    """Nothing listens on echo:9003: B gets ECONNREFUSED -> 503; the client sees a reset."""
    names, zt = lab["names"], lab["zt"]
    mb = zt["b"].mark()
    port = expect_reset(names["c"], SERVER_IP, 9003)
    o = fields(zt["a"].wait_lines(by_port(port))[0])
    i = fields(zt["b"].wait_lines(lambda ln: f"dst.hbone_addr={SERVER_IP}:9003 " in ln, since=mb)[0])
    assert o["level"] == "error" and o["error"] == "http status: 503 Service Unavailable", o
    assert i["level"] == "error" and i["error"] == f"upstream connect to {SERVER_IP}:9003 failed: connection refused", i
    fo = failed(zt["a"], by_port(port))
    assert (fo["direction"], fo["error"]) == ("outbound", "http status: 503 Service Unavailable")
    fi = failed(zt["b"], lambda ln: f'src.addr={i["src.addr"]} ' in ln and f"{SERVER_IP}:9003 failed" in ln)
    assert fi["direction"] == "inbound" and fi["error"] == i["error"]


def test_same_node_fast_path(lab: dict) -> None:
    """sleep -> local-srv (same node): no HBONE on the wire, outbound + inbound lines from ztunnel A."""
    names, zt = lab["names"], lab["zt"]
    got, port = echo_roundtrip(names["c"], LOCAL_IP, 8080, b"y" * 5000)
    assert got == b"y" * 5000
    lines = zt["a"].wait_lines(by_port(port), n=2)
    dirs = {fields(ln)["direction"]: fields(ln) for ln in lines}
    assert set(dirs) == {"outbound", "inbound"}
    for f in dirs.values():
        assert f["src.identity"] == SLEEP and f["dst.identity"] == "spiffe://cluster.local/ns/default/sa/localsrv"
        assert f["dst.addr"] == f"{LOCAL_IP}:15008" and f["level"] == "info"
    assert dirs["outbound"]["bytes_sent"] == dirs["inbound"]["bytes_recv"] == "5000"
    assert dirs["inbound"]["bytes_sent"] == "5000"
    assert not zt["b"].wait_lines(by_port(port), timeout=0.3)


def test_100_concurrent_connections(lab: dict) -> None:
    """100 concurrent echo connections share the pooled HTTP/2 connection; all bytes and lines correct."""
    names, zt = lab["names"], lab["zt"]
    size = 64 * 1024

    async def one(i: int) -> int:
        loop = asyncio.get_running_loop()
        with nsenter.netns(names["c"]):
            s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, (VIP, 80))
        port = s.getsockname()[1]
        r, w = await asyncio.open_connection(sock=s)
        data = bytes([i]) * size
        w.write(data)
        await w.drain()
        w.write_eof()
        got = await r.read(-1)
        w.close()
        assert got == data
        return port

    async def main() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(100)))

    ma, mb = zt["a"].mark(), zt["b"].mark()
    t0 = time.monotonic()
    ports = asyncio.run(main())
    elapsed = time.monotonic() - t0
    pset = {f"{CLIENT_IP}:{p}" for p in ports}
    out = zt["a"].wait_lines(lambda ln: fields(ln)["src.addr"] in pset, n=100, since=ma)
    inb = zt["b"].wait_lines(lambda ln: f"dst.hbone_addr={SERVER_IP}:9000 " in ln and "bytes_recv=65536 " in ln,
                             n=100, since=mb)
    assert len(out) == 100 and len(inb) == 100
    assert all(fields(ln)["bytes_sent"] == str(size) == fields(ln)["bytes_recv"] for ln in out + inb)
    print(f"100 concurrent echo connections of 64 KiB: {elapsed:.2f}s")


def test_one_gib_transfer(lab: dict) -> None:
    """1 GiB through HBONE; byte counts in both logs are exact."""
    names, zt = lab["names"], lab["zt"]
    total = 1 << 30
    ma, mb = zt["a"].mark(), zt["b"].mark()
    s = connect(names["c"], SERVER_IP, 9002, timeout=60)
    port = s.getsockname()[1]
    buf = b"\0" * (1 << 20)
    t0 = time.monotonic()
    for _ in range(total // len(buf)):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := s.recv(100):
        reply += chunk
    elapsed = time.monotonic() - t0
    s.close()
    assert reply == f"got {total}\n".encode()
    o = fields(zt["a"].wait_lines(by_port(port), since=ma)[0])
    i = fields(zt["b"].wait_lines(lambda ln: f"dst.hbone_addr={SERVER_IP}:9002 " in ln, since=mb)[0])
    assert o["bytes_sent"] == str(total) == i["bytes_recv"]
    assert o["bytes_recv"] == str(len(reply)) == i["bytes_sent"]
    print(f"1 GiB over HBONE: {elapsed:.1f}s = {total / elapsed / 1e6:.0f} MB/s")
    assert elapsed < 60


def test_interop_libcurl_http2_connect_with_client_cert(lab: dict) -> None:
    """libcurl (not our code) as the HTTP/2 CONNECT client to ztunnel B's :15008 with a client cert."""
    pycurl = pytest.importorskip("pycurl")
    from netlab.runtime.ztunnel import certs

    names, zt, certs_dir = lab["names"], lab["zt"], str(lab["certs"])
    cert, key = certs.identity_paths(certs_dir, SLEEP)
    result: dict = {}

    def go() -> None:
        c = pycurl.Curl()
        body = bytearray()
        c.setopt(pycurl.URL, f"http://{SERVER_IP}:9080/")
        c.setopt(pycurl.PROXY, f"https://{SERVER_IP}:15008")
        c.setopt(pycurl.PROXYTYPE, getattr(pycurl, "PROXYTYPE_HTTPS2", 3))  # CURLPROXY_HTTPS2 (libcurl >= 8.1)
        c.setopt(pycurl.HTTPPROXYTUNNEL, 1)
        c.setopt(pycurl.PROXY_CAINFO, f"{certs_dir}/ca.pem")
        c.setopt(pycurl.PROXY_SSLCERT, cert)
        c.setopt(pycurl.PROXY_SSLKEY, key)
        c.setopt(pycurl.PROXY_SSL_VERIFYPEER, 1)
        c.setopt(pycurl.PROXY_SSL_VERIFYHOST, 0)  # SPIFFE certs carry a URI SAN, no IP/DNS name
        c.setopt(pycurl.WRITEFUNCTION, body.extend)
        c.setopt(pycurl.TIMEOUT, 10)
        with nsenter.netns(names["a"]):
            c.perform()
        result["code"] = c.getinfo(pycurl.RESPONSE_CODE)
        result["body"] = bytes(body)
        c.close()

    t = threading.Thread(target=go)
    t.start()
    t.join(20)
    assert result.get("code") == 200, result
    assert result["body"] == b"hello from echo over HBONE\n"
    i = [fields(ln) for ln in zt["b"].wait_lines(lambda ln: f"src.addr={A_IP}:" in ln and "9080" in ln)]
    assert i and i[-1]["src.identity"] == SLEEP and i[-1]["dst.hbone_addr"] == f"{SERVER_IP}:9080"
    assert i[-1]["level"] == "info" and int(i[-1]["bytes_sent"]) > len(result["body"])


def _restart_b(lab: dict, **kw: object) -> Ztunnel:
    lab["zt"]["b"].stop()
    names = lab["names"]
    z = Ztunnel(names["b"], "node-b", lab["work"] / f"zt-b-{time.monotonic_ns()}", **kw)  # type: ignore[arg-type]
    lab["zt"]["b"] = z
    return z


@pytest.fixture
def restore_b(lab: dict):
    yield
    _restart_b(lab, registry=lab["registry"], certs_dir=lab["certs"])


def test_identity_mismatch_refused(lab: dict, restore_b: None) -> None:
    """B presents spiffe://…/sa/imposter for echo: A refuses (client reset) and logs the mismatch."""
    zb = _restart_b(lab, registry=registry_doc(echo_sa="imposter"), certs_dir=lab["certs"])
    port = expect_reset(lab["names"]["c"], SERVER_IP, 9000)
    o = fields(lab["zt"]["a"].wait_lines(by_port(port))[0])
    assert o["level"] == "error"
    assert o["error"] == f"identity mismatch: expected {ECHO}, got spiffe://cluster.local/ns/default/sa/imposter"
    assert zb is lab["zt"]["b"]
    f = failed(lab["zt"]["a"], by_port(port))
    assert f == {"level": "warn", "src.addr": f"{CLIENT_IP}:{port}", "dst.addr": f"{SERVER_IP}:15008",
                 "direction": "outbound", "error": o["error"]}


def test_unknown_ca_refused(lab: dict, restore_b: None) -> None:
    """B's certificates come from another CA: the handshake fails; both sides log at error."""
    other = lab["work"] / f"other-ca-{time.monotonic_ns()}"
    zb = _restart_b(lab, registry=lab["registry"], certs_dir=other)  # ztunnel issues from a fresh CA there
    mb = zb.mark()
    port = expect_reset(lab["names"]["c"], SERVER_IP, 9000)
    o = fields(lab["zt"]["a"].wait_lines(by_port(port))[0])
    assert o["level"] == "error" and "tls handshake failed" in o["error"] and "certificate verify failed" in o["error"]
    i = fields(zb.wait_lines(since=mb)[0])
    assert i["level"] == "error" and "tls handshake failed" in i["error"], i
    fo = failed(lab["zt"]["a"], by_port(port))
    assert fo["direction"] == "outbound" and fo["error"] == o["error"]
    fi = failed(zb, lambda ln: f'src.addr={i["src.addr"]} ' in ln)
    assert fi == {"level": "warn", "src.addr": i["src.addr"], "dst.addr": f"{SERVER_IP}:15008",
                  "direction": "inbound", "error": i["error"]}


def _client_ctx(certs_dir: str, client: tuple[str, str]) -> ssl.SSLContext:
    """An HBONE client context with our own (test-chosen) certificate, trusting the lab CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(f"{certs_dir}/ca.pem")
    ctx.load_cert_chain(*client)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _served_cert(ns: str, certs_dir: str, client: tuple[str, str]) -> tuple[x509.Certificate, int]:
    """TLS handshake with ztunnel B's :15008 (for echo) from node A; the certificate it serves."""
    ctx = _client_ctx(certs_dir, client)
    s = connect(ns, SERVER_IP, 15008)
    port = s.getsockname()[1]
    with ctx.wrap_socket(s) as t:
        der = t.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der), port


def _refused(ns: str, certs_dir: str, client: tuple[str, str]) -> int:
    """Like _served_cert, but B must refuse our certificate; returns our port. In TLS 1.3 the client's
    handshake ends before the server has checked the client certificate: the refusal is the alert (or
    reset) on the first read instead of B's HTTP/2 SETTINGS."""
    ctx = _client_ctx(certs_dir, client)
    s = connect(ns, SERVER_IP, 15008)
    port = s.getsockname()[1]
    try:
        with ctx.wrap_socket(s) as t:
            data = t.recv(100)
    except (ssl.SSLError, ConnectionResetError):
        return port
    assert not data, f"B accepted the certificate and sent {data!r}"
    return port


def test_debug_level_logs_connection_opened(lab: dict, restore_b: None) -> None:
    """log_level debug: B logs `connection opened` with the closing line's fields (no bytes, no duration); A
    (info, the default) does not."""
    zb = _restart_b(lab, registry=lab["registry"], certs_dir=lab["certs"], extra={"log_level": "debug"})
    got, port = echo_roundtrip(lab["names"]["c"], VIP, 80, b"z" * 1000)
    assert got == b"z" * 1000
    [done] = zb.wait_lines(lambda ln: f"dst.hbone_addr={SERVER_IP}:9000 " in ln and "bytes_recv=1000 " in ln)
    complete = fields(done)
    opened = zb.wait_events("connection opened", lambda ln: f'src.addr={complete["src.addr"]} ' in ln)
    assert opened, zb.all_lines()
    o = fields(opened[-1], OPENED_RE)
    assert o == {k: v for k, v in complete.items() if k not in ("bytes_sent", "bytes_recv", "duration")} | {
        "level": "debug"}
    assert list(o)[1:] == [k for k in complete if k not in ("level", "bytes_sent", "bytes_recv", "duration")]
    assert not lab["zt"]["a"].events("connection opened")
    assert lab["zt"]["a"].wait_lines(by_port(port))


def test_cert_rotation_keeps_traffic_and_refuses_expired(lab: dict, restore_b: None, tmp_path) -> None:
    """cert_ttl_seconds 4: B's served certificate changes serial every ~2 s (half-life) while requests through
    A -> B keep succeeding; a client presenting an expired certificate is refused and logged."""
    from netlab.runtime.ztunnel import certs

    certs_dir = str(lab["certs"])
    zb = _restart_b(lab, registry=lab["registry"], certs_dir=lab["certs"], extra={"cert_ttl_seconds": 4})
    names = lab["names"]
    sleep = certs.identity_paths(certs_dir, SLEEP)
    serials = []
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        cert, _ = _served_cert(names["a"], certs_dir, sleep)
        assert certs.spiffe_ids_of(cert.public_bytes(serialization.Encoding.DER)) == [ECHO]
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime <= dt.timedelta(seconds=5), lifetime
        assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC)
        if not serials or serials[-1] != cert.serial_number:
            serials.append(cert.serial_number)
        payload = os.urandom(2000)
        got, _ = echo_roundtrip(names["c"], VIP, 80, payload)
        assert got == payload
        time.sleep(0.2)
    assert len(serials) >= 3, serials
    metrics = http_get(names["b"], "127.0.0.1", 15020, "/metrics")
    n = int(re.search(r"^netlab_ztunnel_cert_rotations_total (\d+)$", metrics, re.M).group(1))
    assert n >= len(serials) - 1
    stderr = (zb.log_path.parent / "stderr.log").read_text()
    assert f"certificate for {ECHO} rotated: serial {serials[0]:x} -> {serials[1]:x}" in stderr, stderr

    # a client certificate that expired an hour ago: the handshake is refused, both lines logged at B
    ca, ca_key = certs.load_ca(certs_dir)
    old = certs.issue_svid(ca, ca_key, SLEEP, ttl_seconds=60,
                           now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    (tmp_path / "old.pem").write_bytes(old.cert_pem)
    (tmp_path / "old-key.pem").write_bytes(old.key_pem)
    port = _refused(names["a"], certs_dir, (str(tmp_path / "old.pem"), str(tmp_path / "old-key.pem")))
    f = failed(zb, lambda ln: f"src.addr={A_IP}:{port} " in ln)
    assert f["direction"] == "inbound"
    assert f["error"] == "tls handshake failed: certificate verify failed: certificate has expired", f
    done = zb.wait_lines(lambda ln: f'src.addr={f["src.addr"]} ' in ln)
    assert done and fields(done[0])["error"] == f["error"]
