"""A local Redis Cluster for tests: three masters started from the machine's ``redis-server``.

``local_redis_cluster(directory)`` starts one ``redis-server --cluster-enabled yes`` per master on
free ports (each also needs its cluster bus port, ``port + 10000``), joins them with
``redis-cli --cluster create``, waits until every node reports ``cluster_state:ok`` and agrees
on the slot map, and stops every server on exit. Nothing is persisted (``--save ""``,
``--appendonly no``); node files live in ``directory``.

A missing ``redis-server`` or ``redis-cli`` is a failure, never a skip (CI must not pass without
the cluster tests having run).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

START_LIMIT_S = 30.0


@dataclass
class LocalCluster:
    """A running local cluster: ``ports`` of its masters, in start order."""

    ports: list[int]
    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The URL of the first node (any node works as a cluster client's entry point)."""
        return self.node_url(0)

    def node_url(self, index: int) -> str:
        return f"redis://127.0.0.1:{self.ports[index]}/0"

    def node(self, index: int) -> Redis:
        """A plain (non-cluster) client of one node, for inspecting it."""
        return Redis(host="127.0.0.1", port=self.ports[index])

    def owner_of(self, key: str) -> int:
        """The index of the master that serves ``key``'s slot."""
        with self.node(0) as admin:
            slot = int(admin.execute_command("CLUSTER KEYSLOT", key))
            for start, end, primary, *_replicas in admin.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return self.ports.index(int(primary[1]))
        raise AssertionError(f"slot {slot} of {key!r} is served by no node")

    def flush(self) -> None:
        for index in range(len(self.ports)):
            with self.node(index) as client:
                client.flushall()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_port(taken: set[int]) -> int:
    """A port that is free together with its cluster bus port (``port + 10000``)."""
    for _ in range(200):
        port = random.randrange(20_000, 55_000)
        if port in taken or port + 10_000 in taken:
            continue
        if _port_is_free(port) and _port_is_free(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: the Redis Cluster tests need the machine's {name}")
    return path


def _wait(condition: Callable[[], bool], what: str, limit_s: float = START_LIMIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        with contextlib.suppress(OSError, RedisError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis Cluster: {what} not reached in {limit_s:.0f} s")
        time.sleep(0.05)


def _cluster_ok(cluster: LocalCluster) -> bool:
    maps = set()
    for index in range(len(cluster.ports)):
        with cluster.node(index) as client:
            if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                return False
            slots = client.execute_command("CLUSTER SLOTS")
            maps.add(tuple(sorted((s, e, int(p[1])) for s, e, p, *_ in slots)))
    return len(maps) == 1  # every node agrees on who serves which slots


def _start_node(server: str, directory: Path, port: int) -> subprocess.Popen[bytes]:
    node_dir = directory / str(port)
    node_dir.mkdir()
    log = (node_dir / "redis.log").open("wb")
    return subprocess.Popen(
        [
            server,
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "5000"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--dir", str(node_dir)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=node_dir,
    )


@contextmanager
def local_redis_cluster(directory: Path, masters: int = 3) -> Iterator[LocalCluster]:
    """Start, join and wait for a cluster of ``masters`` masters; stop every server after."""
    server, cli = _binary("redis-server"), _binary("redis-cli")
    taken: set[int] = set()
    cluster = LocalCluster([], directory)
    try:
        for _ in range(masters):
            port = _free_cluster_port(taken)
            taken.update((port, port + 10_000))
            cluster.ports.append(port)
            cluster.processes.append(_start_node(server, directory, port))
        for index in range(masters):

            def answers(i: int = index) -> bool:
                if cluster.processes[i].poll() is not None:
                    log = (directory / str(cluster.ports[i]) / "redis.log").read_text()
                    raise RuntimeError(f"redis-server on {cluster.ports[i]} exited:\n{log}")
                with cluster.node(i) as client:
                    return bool(client.ping())

            _wait(answers, f"node {cluster.ports[index]} answering PING")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in cluster.ports),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=START_LIMIT_S,
        )
        _wait(lambda: _cluster_ok(cluster), "cluster_state:ok on every node")
        yield cluster
    finally:
        for process in cluster.processes:
            process.terminate()
        for process in cluster.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
