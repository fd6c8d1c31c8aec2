"""The seed's curl examples, run with curl exactly as the seed writes them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Any

import httpx

from tests.cluster import WITH_CLUSTER
from tests.helpers import Server, wait_for_status

STORES = WITH_CLUSTER

SEED_URL = "http://localhost:8000"


def curl(server: Server, command: str) -> tuple[str, Any]:
    """Run a seed curl line against `server`; return the raw body and its JSON."""
    argv = shlex.split(command.replace(SEED_URL, f"http://localhost:{server.port}"))
    assert argv[0] == "curl"
    done = subprocess.run([*argv, "--silent", "--show-error"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(done.stdout)


def test_create_sleep(server: Server, client: httpx.Client) -> None:
    body, record = curl(
        server,
        """curl -X POST -d '{ "cmd": "/bin/sleep", "params": ["30"] }' http://localhost:8000/payloads""",
    )
    assert list(record)[:4] == ["status", "cmd", "params", "id"]
    assert record["status"] == "pending"
    assert record["cmd"] == "/bin/sleep"
    assert record["params"] == ["30"]
    assert len(record["id"]) == 32
    assert int(record["id"], 16) >> 76 & 0xF == 4  # a uuid4
    assert record["id"] == record["id"].lower()
    # The seed prints records with four-space indents, fields in this order.
    assert body.startswith(
        '{\n    "status": "pending",\n    "cmd": "/bin/sleep",\n    "params": [\n'
        '        "30"\n    ],\n    "id": "'
    )
    working = wait_for_status(client, record["id"], "working")
    assert working["pid"] > 0


def test_create_with_several_params(server: Server, client: httpx.Client) -> None:
    # The seed pings a host; offline, /bin/echo takes the same arguments and exits 0.
    _, record = curl(
        server,
        """curl -X POST -d '{ "cmd": "/bin/echo", "params": ["-c", "5", "google.com"] }' http://localhost:8000/payloads""",
    )
    assert record["status"] == "pending"
    assert record["params"] == ["-c", "5", "google.com"]
    done = wait_for_status(client, record["id"])
    assert done["status"] == "finished"
    assert done["exit_code"] == 0


def test_missing_executable_status_is_byte_for_byte(server: Server, client: httpx.Client) -> None:
    assert not os.path.exists("/sbin/ping"), "this test needs a machine without /sbin/ping"
    _, record = curl(
        server,
        """curl -X POST -d '{ "cmd": "/sbin/ping", "params": ["-c", "5", "google.com"] }' http://localhost:8000/payloads""",
    )
    done = wait_for_status(client, record["id"])
    assert done["status"] == "error:start('/sbin/ping':No such file or directory"


def test_list_all_payloads(server: Server, client: httpx.Client) -> None:
    _, created = curl(
        server,
        """curl -X POST -d '{ "cmd": "/bin/sleep", "params": ["30"] }' http://localhost:8000/payloads""",
    )
    _, listed = curl(server, "curl -X GET http://localhost:8000/payloads")
    assert isinstance(listed, list)
    ids = [r["id"] for r in listed]
    assert created["id"] in ids
    for record in listed:
        assert {"status", "cmd", "params", "id"} <= record.keys()


def test_get_one_payload(server: Server, client: httpx.Client) -> None:
    _, created = curl(
        server,
        """curl -X POST -d '{ "cmd": "/bin/echo", "params": ["-c", "5", "google.com"] }' http://localhost:8000/payloads""",
    )
    wait_for_status(client, created["id"])
    _, record = curl(server, f"curl -X GET http://localhost:8000/payloads/{created['id']}")
    assert record == {
        **record,
        "status": "finished",
        "cmd": "/bin/echo",
        "params": ["-c", "5", "google.com"],
        "id": created["id"],
    }
