"""
NSD, the authoritative DNS server, serving a generated zone on a loopback
port: what the zone-transfer (AXFR) tests and ``python -m framedclient.bench
axfr`` transfer.

NSD runs unprivileged in the foreground (``-d``) with every file it writes
in one directory: ``username: ""`` keeps it from dropping privileges (it
needs none on a port above 1024), ``database: ""`` serves the zone file
straight from memory, and the pid, xfrd state and zone list files live in
the directory.  Two zones are served: :data:`ZONE`, whose transfer any
loopback address may ask for, and :data:`CLOSED_ZONE`, whose transfer is
REFUSED (it has no ``provide-xfr``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CLOSED_ZONE",
    "RECORDS",
    "ZONE",
    "NsdServer",
    "free_port_tcp_udp",
    "nsd_program",
    "zone_lines",
]

#: The zone whose transfer is allowed.
ZONE = "example.test."
#: A zone NSD serves but refuses to transfer.
CLOSED_ZONE = "closed.test."
#: Records in :data:`ZONE` by default: both SOAs of a transfer count once.
RECORDS = 50_000
SERIAL = 2026120701


def zone_lines(records: int = RECORDS, origin: str = ZONE) -> list[str]:
    """
    The zone file's records, one per line with every name absolute:
    ``name TTL IN TYPE rdata``.  The SOA, the apex NS and its address come
    first, then A, AAAA, TXT, MX and CNAME records in turn, ``records`` in
    all (at least 4).
    """
    if records < 4:
        raise ValueError(f"records must be at least 4, got {records}")
    lines = [
        f"{origin} 3600 IN SOA ns1.{origin} hostmaster.{origin} "
        f"{SERIAL} 3600 600 86400 300",
        f"{origin} 3600 IN NS ns1.{origin}",
        f"ns1.{origin} 3600 IN A 127.0.0.1",
    ]
    for i in range(records - 3):
        name = f"h{i}.{origin}"
        ttl = 60 + i % 7
        kind = i % 5
        if kind == 0:
            lines.append(f"{name} {ttl} IN A {ipaddress.IPv4Address(0x0A000000 + i)}")
        elif kind == 1:
            address = ipaddress.IPv6Address((0x20010DB8 << 96) + i)
            lines.append(f"{name} {ttl} IN AAAA {address}")
        elif kind == 2:
            # 0 to 120 bytes of text: messages of varied sizes.
            lines.append(f'{name} {ttl} IN TXT "record {i} {"x" * (i % 121)}"')
        elif kind == 3:
            lines.append(f"{name} {ttl} IN MX {i % 50} mail{i % 97}.{origin}")
        else:
            lines.append(f"{name} {ttl} IN CNAME h{i - 4}.{origin}")
    return lines


def nsd_program() -> str | None:
    """
    The path of ``nsd`` (Debian installs it in /usr/sbin, often not on a
    user's PATH), or ``None``.
    """
    found = shutil.which("nsd")
    if found is None and os.access("/usr/sbin/nsd", os.X_OK):
        found = "/usr/sbin/nsd"
    return found


def free_port_tcp_udp() -> int:
    """
    A loopback port free for both TCP and UDP (NSD binds both).
    """
    for _ in range(100):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no loopback port free for both TCP and UDP")


def soa_query(zone: str, query_id: int = 0x1234) -> bytes:
    """
    A query for ``zone``'s SOA, over TCP (length included).
    """
    name = b"".join(
        bytes([len(label)]) + label.encode() for label in zone.rstrip(".").split(".")
    )
    message = struct.pack(">HHHHHH", query_id, 0, 1, 0, 0, 0) + name + b"\x00"
    message += struct.pack(">HH", 6, 1)
    return struct.pack(">H", len(message)) + message


def serves(port: int, zone: str = ZONE) -> bool:
    """
    Whether NSD answers ``zone``'s SOA with NOERROR (blocking).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(soa_query(zone))
            reply = b""
            while len(reply) < 6:
                data = s.recv(512)
                if not data:
                    return False
                reply += data
            return reply[5] & 0x0F == 0 and bool(reply[4] & 0x80)
    except OSError:
        return False


class NsdServer:
    """
    NSD on 127.0.0.1:``port``, serving :data:`ZONE` (``records`` records)
    and :data:`CLOSED_ZONE` from files in ``workdir``.

    :ivar zone_file: the zone file of :data:`ZONE`.
    """

    def __init__(self, program: str, workdir: Path, records: int = RECORDS) -> None:
        self.program = program
        self.workdir = workdir
        self.records = records
        self.port = free_port_tcp_udp()
        self.zone_file = workdir / "example.test.zone"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_files(self) -> Path:
        work = self.workdir
        self.zone_file.write_text("\n".join(zone_lines(self.records)) + "\n")
        (work / "closed.test.zone").write_text(
            "\n".join(zone_lines(4, CLOSED_ZONE)) + "\n"
        )
        config = work / "nsd.conf"
        config.write_text(
            f"""server:
    ip-address: 127.0.0.1
    port: {self.port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{work}"
    database: ""
    zonelistfile: "{work}/zone.list"
    pidfile: "{work}/nsd.pid"
    xfrdfile: "{work}/xfrd.state"
    xfrdir: "{work}"
    logfile: "{work}/nsd.log"
    server-count: 1
    tcp-count: 100
    verbosity: 0
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: {ZONE}
    zonefile: {self.zone_file.name}
    provide-xfr: 127.0.0.0/8 NOKEY
zone:
    name: {CLOSED_ZONE}
    zonefile: closed.test.zone
"""
        )
        return config

    def log(self) -> str:
        path = self.workdir / "nsd.log"
        return path.read_text() if path.exists() else ""

    def start(
        self, timeout: float = 30.0, preexec_fn: Callable[[], None] | None = None
    ) -> None:
        """
        Start NSD and wait until it serves :data:`ZONE`.

        :param preexec_fn: run in NSD's process before it starts (the
            bench pins it to a CPU).

        :raises RuntimeError: NSD exited or did not serve in time (its log
            in the message).
        """
        config = self.write_files()
        self.proc = subprocess.Popen(
            [self.program, "-d", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=preexec_fn,
        )
        deadline = time.monotonic() + timeout
        while not serves(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nsd did not start: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
