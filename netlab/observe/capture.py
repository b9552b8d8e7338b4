"""``netlab capture``: every interface of every lab netns at once, from AF_PACKET sockets.

Each capture socket is created by the calling thread while it is switched into the interface's
netns (``netlab.linux.nsenter``; a socket keeps the netns it was made in), bound to that one
device, given the compiled BPF filter and a kernel timestamp per packet (``SO_TIMESTAMPNS``).
One reader thread epolls all of them and streams each interface into its own pcap. Every socket
is bound before the command starts, so nothing it sends is missed; after it exits the reader
keeps going until the sockets have been quiet for a moment (in-flight packets drained), then the
kernel's per-socket counters (``PACKET_STATISTICS``: received, dropped for lack of buffer) are
read, the files closed and merged into one pcapng. The sockets are the whole footprint: no
process, no rule, nothing left in the lab when the capture ends (Ctrl-C included).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netlab.errors import LabError, PreflightError
from netlab.linux import nsenter
from netlab.observe import pcapfiles
from netlab.observe.model import CaptureResult, InterfaceCapture

if TYPE_CHECKING:
    from scapy.arch.common import bpf_program

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772  # both captured as Ethernet (lo has a zeroed header)
RCVBUF = 8 << 20
RECV_SIZE = 65536 + 1024  # a GSO/GRO super-frame on a veth is at most 64 KiB plus headers
_TS = struct.Struct("=qq")
_CMSG = socket.CMSG_SPACE(_TS.size)


@dataclass(frozen=True)
class Interface:
    """A device to capture: ``member`` is the lab TARGET owning the netns (pod, node, ...)."""

    member: str
    netns: str
    device: str


def list_devices(netns: str) -> list[str]:
    """Device names of a netns, from inside it (``if_nameindex`` asks the thread's netns)."""
    with nsenter.netns(netns):
        return [name for _, name in sorted(socket.if_nameindex())]


def lab_interfaces(members: dict[str, str], only: Sequence[str] = ()) -> list[Interface]:
    """Every device of every member's netns, or of the ``only`` selection.

    ``only`` items are ``TARGET`` (all its devices) or ``TARGET:DEVICE``.
    """
    wanted: dict[str, set[str] | None] = {}
    for item in only:
        target, _, dev = item.partition(":")
        if target not in members:
            raise LabError(f"--only {item}: no lab member named {target!r}",
                           hint="pods, nodes, ztunnel-<node>, net (the underlay)")
        if dev:
            cur = wanted.setdefault(target, set())
            if cur is not None:
                cur.add(dev)
        else:
            wanted[target] = None
    out: list[Interface] = []
    for member, ns in sorted(members.items()):
        if only and member not in wanted:
            continue
        devices = list_devices(ns)
        sel = wanted.get(member)
        if sel is not None:
            missing = sel - set(devices)
            if missing:
                raise LabError(f"--only: {member} has no device {', '.join(sorted(missing))}",
                               hint=f"its devices: {', '.join(devices)}")
            devices = [d for d in devices if d in sel]
        out.extend(Interface(member, ns, d) for d in devices)
    return out


def compile_bpf(expr: str | None) -> bpf_program | None:
    """libpcap's compiler (through scapy) for an Ethernet link; a bad filter is one clear error."""
    if not expr:
        return None
    # scapy takes about a second to import: loaded only when packets are read
    from scapy.arch.common import compile_filter
    from scapy.error import Scapy_Exception

    try:
        return compile_filter(expr, linktype=pcapfiles.LINKTYPE_ETHERNET)
    except (Scapy_Exception, OSError) as e:
        raise LabError(f"--filter {expr!r}: {e}") from None
    except ImportError as e:
        raise PreflightError(f"cannot compile --filter: {e}", hint="apt-get install libpcap0.8") from None


class _Tap:
    __slots__ = ("iface", "sock", "writer", "packets", "received", "drops", "loopback")

    def __init__(self, iface: Interface, sock: socket.socket, writer: pcapfiles.InterfaceWriter) -> None:
        self.iface, self.sock, self.writer = iface, sock, writer
        self.packets = self.received = self.drops = 0
        self.loopback = False

    def stats(self) -> None:
        """Add the kernel's counters (they reset on each read)."""
        with contextlib.suppress(OSError):
            received, drops = struct.unpack("=II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            self.received += received
            self.drops += drops


def _hw_type(sock: socket.socket, device: str) -> int:
    req = struct.pack("16s16x", device.encode())
    return struct.unpack_from("=H", fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, req), 16)[0]


def _open_socket(iface: Interface, bpf: bpf_program | None) -> tuple[socket.socket, bool] | None:
    """A socket bound to one device, made in (and forever belonging to) that device's netns.

    Created with protocol 0 so it sees nothing until ``bind`` names the device and ETH_P_ALL:
    no other interface's packets can slip in before the filter is set.
    """
    with nsenter.netns(iface.netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        hw = _hw_type(s, iface.device)
        if hw not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            s.close()
            return None
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if bpf is not None:
            # scapy takes about a second to import: loaded only when packets are read
            from scapy.arch.linux import sock_fprog

            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog(bpf.bf_len, bpf.bf_insns))
        s.bind((iface.device, ETH_P_ALL))
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s, hw == ARPHRD_LOOPBACK


class Capture:
    """Capture sockets on ``interfaces`` writing into ``directory``; ``start()`` … ``stop()``.

    ``stop()`` drains (until ``quiet`` seconds without a packet, at most ``max_drain``), reads the
    kernel counters, closes every socket and file, and writes the merged pcapng. It is safe to
    call from a ``finally`` after Ctrl-C; the files are valid whatever happened before.
    """

    def __init__(self, interfaces: Sequence[Interface], directory: str, *, bpf_filter: str | None = None,
                 merged_name: str = "merged.pcapng") -> None:
        self.interfaces = list(interfaces)
        self.directory = directory
        self.bpf_filter = bpf_filter
        self.merged = os.path.join(directory, merged_name)
        self._taps: list[_Tap] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last_packet = 0.0
        self._ep: select.epoll | None = None
        self._closed = False

    def start(self) -> None:
        """Open every socket (all bound before this returns), then start the reader thread."""
        os.makedirs(self.directory, exist_ok=True)
        bpf = compile_bpf(self.bpf_filter)
        try:
            for iface in self.interfaces:
                opened = _open_socket(iface, bpf)
                if opened is None:
                    log.info("%s/%s: not an Ethernet device, skipped", iface.netns, iface.device)
                    continue
                path = os.path.join(self.directory, pcapfiles.pcap_name(iface.netns, iface.device))
                tap = _Tap(iface, opened[0], pcapfiles.InterfaceWriter(path))
                tap.loopback = opened[1]
                self._taps.append(tap)
        except BaseException:
            self._close()
            raise
        finally:
            if bpf is not None:
                # scapy takes about a second to import: loaded only when packets are read
                from scapy.arch.common import free_filter

                free_filter(bpf)  # the kernel keeps its own copy of the program
        self._ep = select.epoll()
        for tap in self._taps:
            self._ep.register(tap.sock.fileno(), select.EPOLLIN)
        self._last_packet = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="netlab-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        by_fd = {t.sock.fileno(): t for t in self._taps}
        assert self._ep is not None
        try:
            while not self._stop.is_set():
                for fd, _ in self._ep.poll(0.05):
                    self._read(by_fd[fd])
        except BaseException as e:  # re-raised by stop(): a capture never fails silently
            self._error = e

    def _read(self, tap: _Tap, limit: int = 512) -> int:
        sock, write = tap.sock, tap.writer.write
        n = 0
        while n < limit:
            try:
                data, anc, _flags, addr = sock.recvmsg(RECV_SIZE, _CMSG)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING and tap.loopback:
                continue  # lo hands every packet to packet sockets twice; keep the delivery (as libpcap does)
            ts = 0
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TS.unpack(raw[:_TS.size])
                    ts = sec * 1_000_000_000 + nsec
            write(data, ts or time.time_ns(), addr[2] == PACKET_OUTGOING)
            n += 1
        if n:
            tap.packets += n
            self._last_packet = time.monotonic()
        return n

    def drain(self, *, quiet: float = 0.1, max_drain: float = 1.5) -> None:
        """Wait until no packet arrived for ``quiet`` s (at most ``max_drain`` s)."""
        end = time.monotonic() + max_drain
        while time.monotonic() < end:
            idle = time.monotonic() - self._last_packet
            if idle >= quiet:
                return
            time.sleep(min(quiet - idle, 0.05))

    def stop(self, *, drain: bool = True) -> list[InterfaceCapture]:
        if self._thread is not None:
            if drain:
                self.drain()
            self._stop.set()
            self._thread.join()
            self._thread = None
        for tap in self._taps:  # what arrived since the last poll round
            while self._read(tap):
                pass
            tap.stats()
        self._close()
        if self._error is not None:
            raise self._error
        inputs = [pcapfiles.MergeInput(t.iface.netns, t.iface.device, t.writer.path, bytes(t.writer.directions),
                                       t.received, t.drops) for t in self._taps]
        pcapfiles.merge(inputs, self.merged)
        return [InterfaceCapture(netns=t.iface.netns, device=t.iface.device, pcap=t.writer.path,
                                 packets=t.packets, kernel_drops=t.drops, member=t.iface.member)
                for t in self._taps]

    def _close(self) -> None:
        self._closed = True
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        # Closing a packet socket waits for an RCU grace period (packet_release -> synchronize_net,
        # ~15 ms each here); closed one after another, 46 sockets cost 0.7 s. Closed together,
        # the waits overlap. Every socket is closed before this returns.
        socks = [tap.sock for tap in self._taps if tap.sock.fileno() >= 0]
        if socks:
            with ThreadPoolExecutor(max_workers=min(64, len(socks)), thread_name_prefix="netlab-close") as ex:
                list(ex.map(socket.socket.close, socks))
        for tap in self._taps:
            tap.writer.close()

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self.stop(drain=exc[0] is None)


def run_command(netns: str, argv: Sequence[str], *, stdout: int | None = None) -> int:
    """Run ``argv`` in ``netns`` like ``netlab exec`` (``ip netns exec``: the lab's /etc/hosts).

    Ctrl-C reaches it too (same process group); if it outlives the interrupt by 2 s it is
    killed by its pid.
    """
    p = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=stdout)
    try:
        return p.wait()
    except KeyboardInterrupt:
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        raise


def capture(lab: str, directory: str, *, members: dict[str, str], only: Sequence[str] = (),
            bpf_filter: str | None = None, seconds: float | None = None,
            command: tuple[str, Sequence[str]] | None = None, command_stdout: int | None = None,
            on_started: Callable[[int], None] | None = None) -> CaptureResult:
    """Capture ``lab`` while ``command`` (TARGET netns, argv) runs, or for ``seconds``.

    ``members`` maps TARGET names to netns (the lab record's). ``on_started(n)`` is called once
    all ``n`` sockets are capturing, before the command starts.
    """
    if (seconds is None) == (command is None):
        raise LabError("give either --seconds N or -- TARGET CMD...")
    ifaces = lab_interfaces(members, only)
    if not ifaces:
        raise LabError(f"lab {lab}: nothing to capture")
    cap = Capture(ifaces, directory, bpf_filter=bpf_filter)
    cap.start()
    rc: int | None = None
    interrupted = False
    try:
        if on_started:
            on_started(len(cap.interfaces))
        if command is not None:
            rc = run_command(command[0], command[1], stdout=command_stdout)
        else:
            assert seconds is not None
            time.sleep(seconds)
    except KeyboardInterrupt:  # files are still closed and merged; the caller reports it
        interrupted = True
    finally:
        result = cap.stop(drain=not interrupted)
    return CaptureResult(lab=lab, directory=directory, merged=cap.merged, interfaces=tuple(result), command_rc=rc,
                         interrupted=interrupted)
