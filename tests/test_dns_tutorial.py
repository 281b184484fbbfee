"""
The codec tutorial (docs/codec-tutorial.md) against a real DNS server:
its program runs as written, and its codec carries 5,000 concurrent queries
and more queries than its 16-bit ID space over one connection to unbound
(Debian package ``unbound``, started here on a free loopback port with a
local zone).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults

from framedclient import FramedClient, RemoteError
from framedclient.codecs import Message
from framedclient.runner.codecspec import parse_codec

from .test_runner_gateway import error_of, running

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "codec-tutorial.md"
NAMES = 1000


def address_of(i: int) -> str:
    return f"10.{i // 256}.{i % 256}.7"


def tutorial_program() -> str:
    """The tutorial's program: the first python block after its heading."""
    text = TUTORIAL.read_text()
    section = text[text.index("## The program") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/codec-tutorial.md has no program block"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(port: int) -> bool:
    """Whether unbound answers one query over TCP (blocking, before the tests)."""
    query = (
        b"\x12\x34\x01\x00\x00\x01"
        + bytes(6)
        + b"\x01a\x07example\x04test\x00\x00\x01\x00\x01"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(struct.pack(">H", len(query)) + query)
            return len(s.recv(2)) == 2
    except OSError:
        return False


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """
    unbound on 127.0.0.1:<free port>, answering a local zone: a.example.test
    and h0..h999.example.test have A records, any other name in the zone
    is NXDOMAIN.  Stopped by PID at the end.
    """
    program = shutil.which("unbound") or (
        "/usr/sbin/unbound" if os.path.exists("/usr/sbin/unbound") else None
    )
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail("unbound is missing under CI (Debian package unbound)")
        pytest.skip("unbound is not installed (.ci/run installs it)")
    workdir = tmp_path_factory.mktemp("unbound")
    port = free_port()
    records = "\n".join(
        f'    local-data: "h{i}.example.test. 60 IN A {address_of(i)}"'
        for i in range(NAMES)
    )
    config = workdir / "unbound.conf"
    config.write_text(
        f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    pidfile: ""
    use-syslog: no
    logfile: ""
    directory: "{workdir}"
    num-threads: 1
    verbosity: 0
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    local-zone: "example.test." static
    local-data: "a.example.test. 60 IN A 10.0.0.1"
{records}
remote-control:
    control-enable: no
"""
    )
    log = (workdir / "unbound.log").open("w")
    proc = subprocess.Popen(
        [program, "-d", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while not answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    "unbound did not start: " + (workdir / "unbound.log").read_text()
                )
            time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def tutorial() -> dict[str, Any]:
    """The tutorial's program loaded as a module (its main does not run)."""
    code = tutorial_program()
    namespace: dict[str, Any] = {"__name__": "dns_tutorial"}
    exec(compile(code, "dns_tutorial.py", "exec"), namespace)
    return namespace


def test_tutorial_program_runs_as_written(unbound: int, tmp_path: Path):
    script = tmp_path / "dns_client.py"
    script.write_text(tutorial_program())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "127.0.0.1",
            str(unbound),
            "a.example.test",
            "h258.example.test",
            "nope.example.test",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "a.example.test 10.0.0.1\n"
        "h258.example.test 10.1.2.7\n"
        "nope.example.test NXDOMAIN (RCODE 3)\n"
    )


def dns_client(port: int, codec: Any, **options: Any) -> FramedClient:
    return FramedClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{port}",
        codec=codec,
        pool_size=1,
        request_timeout=60.0,
        **options,
    )


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_five_thousand_concurrent_queries_each_get_their_answer(
    unbound: int, tutorial: dict[str, Any]
):
    question, addresses = tutorial["question"], tutorial["addresses"]
    client = dns_client(unbound, tutorial["DNS"], max_in_flight=5000)
    async with client:
        await client.when_ready()
        names = [
            f"h{i % NAMES}.example.test" if i % 10 else f"missing{i}.example.test"
            for i in range(5000)
        ]
        results = await DeferredList(
            [client.request(question(name)) for name in names], consumeErrors=True
        )
    for i, (name, (ok, result)) in enumerate(zip(names, results, strict=True)):
        if i % 10:
            assert ok, result
            assert addresses(result, name) == [address_of(i % NAMES)], name
        else:
            assert not ok
            assert result.check(RemoteError), result
            assert (result.value.code, result.value.message) == (3, "NXDOMAIN")
    stats = client.stats()["metrics"]["requests"]
    assert stats["ok"] == 4500 and stats["remote_error"] == 500


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest_twisted.ensureDeferred
async def test_more_queries_than_the_id_space_over_one_connection(
    unbound: int, tutorial: dict[str, Any]
):
    # 16-bit IDs, default max_pending_per_connection: the IDs wrap around
    # (skipping those in flight) and every reply still reaches its query.
    question, addresses = tutorial["question"], tutorial["addresses"]
    client = dns_client(unbound, tutorial["DNS"], max_in_flight=2000)
    total, window = 70_000, 2000
    ids: set[int] = set()
    async with client:
        await client.when_ready()
        for start in range(0, total, window):
            batch = [f"h{i % NAMES}.example.test" for i in range(start, start + window)]
            replies = await gatherResults([client.request(question(n)) for n in batch])
            for i, (name, reply) in enumerate(zip(batch, replies, strict=True)):
                assert addresses(reply, name) == [address_of((start + i) % NAMES)]
                ids.add(reply.fields["id"])
    metrics = client.stats()["metrics"]
    assert metrics["requests"]["ok"] == total
    assert metrics["connections"]["connected"] == 1, "all over one connection"
    # Every ID of the space was used: the allocator wrapped around.
    assert len(ids) == 0xFFFF


@pytest_twisted.ensureDeferred
async def test_builtin_dns_codec_against_unbound(unbound: int):
    client = dns_client(unbound, parse_codec("dns"))
    async with client:
        reply = await client.request(
            Message(
                fields={"rd": 0}, body=b"\x01a\x07example\x04test\x00\x00\x01\x00\x01"
            )
        )
        assert isinstance(reply, Message)
        assert (reply.fields["qr"], reply.fields["rcode"], reply.fields["ancount"]) == (
            1,
            0,
            1,
        )
        assert reply.fields["aa"] == 1  # unbound is authoritative for its local zone
        assert reply.body.endswith(bytes([10, 0, 0, 1]))
        with pytest.raises(RemoteError) as raised:
            await client.request(b"\x04nope\x07example\x04test\x00\x00\x01\x00\x01")
        assert (raised.value.code, raised.value.message) == (3, "NXDOMAIN")
        assert raised.value.reply.fields["rcode"] == 3


@pytest_twisted.ensureDeferred
async def test_gateway_with_the_dns_codec_answers_over_http(unbound: int):
    question = b"\x01a\x07example\x04test\x00\x00\x01\x00\x01"
    async with running(
        "--upstream", f"tcp:127.0.0.1:{unbound}", "--codec", "dns"
    ) as gw:
        code, _, body = await gw.post(question)
        assert code == 200
        # The message after the header: the question, then the A record.
        assert body.startswith(question)
        assert body.endswith(bytes([10, 0, 0, 1]))
        code, _, body = await gw.post(b"\x04nope" + question[2:])
        assert code == 500
        assert error_of(body) == ("remote_error", "NXDOMAIN")
