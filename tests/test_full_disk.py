"""A full disk: creates answer 503 with Retry-After, a start says so in one line, and what
ended while the disk was full is kept once space frees, across a kill -9 after that."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import handler_serve, release, start_server, wait_for_status, wait_until

STORES = ("sqlite",)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB file system of its own (tmpfs, mounted here as root), unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (remove it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    return filler
                block = block[: len(block) // 2]
    finally:
        os.close(fd)


def test_statuses_reached_on_a_full_disk_are_kept_and_survive_a_crash(
    small_disk: Path, tmp_path: Path
) -> None:
    args = ("--store", f"sqlite:///{small_disk / 'pericles.db'}")
    gates = [tmp_path / f"gate{i}" for i in range(6)]
    for gate in gates:
        os.mkfifo(gate)
    server = start_server(*args)
    try:
        with server.client() as client:
            ids = []
            for i, gate in enumerate(gates):
                body = {"cmd": "/bin/sh", "params": ["-c", f"read x < {gate}; echo out{i}"]}
                ids.append(client.post("/payloads", json=body).json()["id"])
            for payload_id in ids:
                wait_for_status(client, payload_id, "working")
            filler = fill(small_disk)
            refused = client.post("/payloads", json={"cmd": "/bin/true"})
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.headers["content-type"] == "application/problem+json"
            for gate in gates:
                release(gate)
            for payload_id in ids:
                assert wait_for_status(client, payload_id)["status"] == "finished"
            filler.unlink()
            wait_until(lambda: client.get("/readyz").status_code == 200, 20, "the store back")
    finally:
        server.stop(signal.SIGKILL)
    server = start_server(*args)
    try:
        with server.client() as client:
            for i, payload_id in enumerate(ids):
                record = client.get(f"/payloads/{payload_id}").json()
                assert record["status"] == "finished", record
                assert record["exit_code"] == 0
                output = client.get(f"/payloads/{payload_id}/output").content
                assert output == f"out{i}\n".encode()
    finally:
        server.stop()


def test_a_start_on_a_full_disk_is_one_line(small_disk: Path) -> None:
    fill(small_disk)
    done = subprocess.run(
        [handler_serve(), "--port", "0", "--store", f"sqlite:///{small_disk / 'new.db'}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "full" in done.stderr
    with contextlib.suppress(FileNotFoundError):
        (small_disk / "new.db").unlink()
