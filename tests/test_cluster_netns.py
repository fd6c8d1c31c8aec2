"""Many machines, with real networks: two workers in network namespaces of their own.

Each "host" is a network namespace (`ip netns`) linked to this one by a veth pair with a /30
of its own; redis-server listens on 127.0.0.1 and on the root side of each link, and each
`pericles worker` runs in its namespace (`ip netns exec`), reaching Redis over its link only.
The API replica runs here. Payloads show which network they ran in: `/proc/net/dev` lists the
interfaces of the reader's namespace.

Needs root (`ip netns add`): without it the test fails in one line saying so. It does not fall
back: workers as separate process trees with their own `--hostname` on one network are the
configuration of tests/test_cluster.py, which runs everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import CLUSTER, NetHost, RedisServer, netns_missing, network_hosts, start_worker
from tests.helpers import group_members, post, sse_events, start_server, wait_for_status, wait_until

STORES = (CLUSTER,)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[RedisServer, list[NetHost]]]:
    """Two network namespaces and a redis-server that both reach over their own link."""
    missing = netns_missing()
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    with network_hosts(2) as made:
        redis = RedisServer(tmp_path, also_bind=tuple(h.gateway for h in made)).start()
        try:
            yield redis, made
        finally:
            redis.stop()


def _reaches(host: NetHost, address: str, port: int) -> bool:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), 2).close()"
    done = subprocess.run(
        [*host.run, sys.executable, "-c", probe], capture_output=True, check=False
    )
    return done.returncode == 0


@pytest.mark.slow
def test_workers_in_their_own_network_namespaces_run_their_queues_payloads(
    hosts: tuple[RedisServer, list[NetHost]],
) -> None:
    redis, (a, b) = hosts
    # Separate networks: a namespace reaches Redis over its link, not over this host's lo.
    assert _reaches(a, a.gateway, redis.port)
    assert not _reaches(a, "127.0.0.1", redis.port)
    worker_a = start_worker(redis.url(address=a.gateway), hostname=a.name, queues="a", wrap=a.run)
    worker_b = start_worker(redis.url(address=b.gateway), hostname=b.name, queues="b", wrap=b.run)
    api = start_server("--store", redis.url(), "--runner", "celery")
    try:
        with api.client() as client:
            # Routed by queue, each payload runs on its host and sees that host's network.
            on_a = post(client, "/bin/cat", "/proc/net/dev", queue="a")
            on_b = post(client, "/bin/cat", "/proc/net/dev", queue="b")
            runs = ((on_a, "a", a, b, worker_a), (on_b, "b", b, a, worker_b))
            for record, queue, host, other, worker in runs:
                ended = wait_for_status(client, record["id"])
                assert ended["worker"] == f"{host.name}/{worker.pid}", ended
                assert ended["queue"] == queue
                interfaces = client.get(f"/payloads/{record['id']}/output").text
                assert f"{host.interface}:" in interfaces, interfaces
                assert other.interface not in interfaces, interfaces
                assert host.outside not in interfaces, interfaces

            # Live output from host b over SSE, then a cancel from here that ends it there.
            record = post(client, "/bin/sh", "-c", "echo ready; exec sleep 60", queue="b")
            url = f"/payloads/{record['id']}/events"
            with client.stream("GET", url, timeout=30) as response:
                assert response.status_code == 200
                for event in sse_events(response.iter_lines()):
                    if event.event == "output":
                        assert json.loads(event.data)["text"] == "ready\n"
                        break
            working = client.get(f"/payloads/{record['id']}").json()
            assert working["status"] == "working", working
            assert working["worker"] == f"{b.name}/{worker_b.pid}"
            cancelled = client.post(f"/payloads/{record['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["status"] == "cancelled"
            wait_until(lambda: not group_members(working["pid"]), 5, "the payload's group to go")
    finally:
        api.stop()
        worker_a.stop()
        worker_b.stop()
