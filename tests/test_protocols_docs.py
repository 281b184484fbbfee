"""
The examples of docs/protocols.md run as written against real servers (only
the endpoint's port is changed to the fixture's).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from .servers import memcached_server, redis_server

DOC = Path(__file__).parent.parent / "docs" / "protocols.md"


def examples() -> list[str]:
    """The doc's complete programs (the blocks that define ``main``)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return [b for b in blocks if "async def main(reactor)" in b]


def load(block: str, namespace: dict, port: int, default_port: str) -> None:
    code = block.replace(f"127.0.0.1:{default_port}", f"127.0.0.1:{port}")
    # The doc runs main with task.react; the test awaits it instead.
    code = "\n".join(
        line for line in code.splitlines() if not line.startswith("task.react(")
    )
    exec(compile(code, str(DOC), "exec"), namespace)


def test_the_doc_has_a_redis_and_a_memcached_program():
    assert len(examples()) == 2


@pytest.fixture
def redis(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server


@pytest.fixture
def memcached():
    with memcached_server() as server:
        yield server


@pytest_twisted.ensureDeferred
async def test_the_redis_example_runs(redis, capsys):
    namespace: dict = {}
    load(examples()[0], namespace, redis.port, "6379")
    await namespace["main"](reactor)
    out = capsys.readouterr().out
    assert "b'hello'" in out and "WRONGTYPE" in out


@pytest_twisted.ensureDeferred
async def test_the_memcached_example_runs(memcached, capsys):
    namespace: dict = {}
    # Alone: each program carries its own imports, so it runs as copied.
    load(examples()[1], namespace, memcached.port, "11211")
    await namespace["main"](reactor)
    out = capsys.readouterr().out
    assert "b'v'" in out and "{b'k': b'v'}" in out and "False" in out
