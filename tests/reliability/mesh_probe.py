"""A hand-held HBONE client for the security tests: TLS to a pod's 15008 from inside a lab
netns with a certificate of the test's choosing, then one HTTP/2 CONNECT.

Outcome strings: ``served <status>`` (CONNECT answered), ``refused: <why>`` (handshake
failure, alert, reset, EOF or timeout before any HTTP/2 response)."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile

import h2.config
import h2.connection
import h2.events

from netlab.linux import nsenter
from netlab.runtime.ztunnel import certs


def connect(ns: str, ip: str, port: int, timeout: float = 5) -> socket.socket:
    with nsenter.netns(ns):
        return socket.create_connection((ip, port), timeout=timeout)


def pem_pair(svid: certs.Svid) -> tuple[str, str]:
    d = tempfile.mkdtemp(prefix="rl-sec-")
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    with open(cert, "wb") as f:
        f.write(svid.cert_pem)
    with open(key, "wb") as f:
        f.write(svid.key_pem)
    return cert, key


def client_ctx(ca_pem: str, pair: tuple[str, str] | None, *, tls12: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we probe the server's checks, not its certificate
    if tls12:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if pair:
        ctx.load_cert_chain(*pair)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def hbone_connect(ns: str, ip: str, target: str, ctx: ssl.SSLContext | None) -> str:
    """CONNECT ``target`` through ``ip``:15008 from netns ``ns``; plaintext if ``ctx`` is None."""
    try:
        s = connect(ns, ip, 15008)
    except OSError as e:
        return f"refused: connect {e.strerror or e}"
    try:
        if ctx is not None:
            try:
                s = ctx.wrap_socket(s)
            except (ssl.SSLError, OSError) as e:
                return f"refused: handshake {e}"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "CONNECT"), (":authority", target)])
        try:
            s.sendall(conn.data_to_send())
            while True:
                data = s.recv(65536)
                if not data:
                    return "refused: closed"
                if ctx is None and data[:1] == b"\x15":
                    return "refused: TLS alert to plaintext"
                try:
                    events = conn.receive_data(data)
                except Exception as e:  # noqa: BLE001 - not HTTP/2 at all
                    return f"refused: not HTTP/2 ({type(e).__name__})"
                s.sendall(conn.data_to_send())
                for ev in events:
                    if isinstance(ev, h2.events.ResponseReceived):
                        return "served " + dict(ev.headers)[b":status"].decode()
                    if isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        return f"refused: {type(ev).__name__}"
        except (ssl.SSLError, OSError) as e:
            return f"refused: {e}"
    finally:
        s.close()
