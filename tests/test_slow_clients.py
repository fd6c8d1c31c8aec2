"""Slow or many clients cannot take the server: body timeout, connection limit, descriptors."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.helpers import (
    is_terminal,
    release_all,
    start_server,
    wait_for_status,
    wait_until,
)

STORES = ("memory",)

STALLED_HEAD = (
    b"POST /payloads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000000\r\n\r\n{"
)


@contextlib.contextmanager
def stalled_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that each send a head announcing a large body, then nothing."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(STALLED_HEAD)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def answered(sock: socket.socket) -> bytes | None:
    """What the server sent on `sock` so far (it closes after), None while it sent nothing."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b"reset"
    return data or b"closed"


def test_a_stalled_body_gets_408_and_one_info_line() -> None:
    server = start_server("--body-timeout", "0.5")
    try:
        with stalled_clients(server.port, 1) as (sock,):
            reply = wait_until(lambda: answered(sock), 10, "an answer to a stalled body")
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert b"application/problem+json" in reply
        assert b"body-timeout" in reply
        gone = wait_until(
            lambda: [line for line in server.log_lines if "went away" in line], 10, "a log line"
        )
        assert len(gone) == 1, gone
        assert " INFO " in gone[0]
        assert "Traceback" not in server.log()
        assert " ERROR " not in server.log()
    finally:
        server.stop()


def test_2000_stalled_clients_do_not_stop_a_create(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        server = start_server()
        stack.callback(server.stop)
        stack.enter_context(stalled_clients(server.port, 2000))
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
            created = client.post("/payloads", json={"cmd": "/bin/echo", "params": ["ran"]})
            assert created.status_code == 201, created.text
            record = wait_for_status(client, created.json()["id"])
            assert record["status"] == "finished"
            assert client.get(f"/payloads/{record['id']}/output").content == b"ran\n"


def test_past_the_connection_limit_new_ones_get_503_and_payloads_still_start(
    tmp_path: Path,
) -> None:
    """With 512 descriptors in all, 2,000 stalled clients take what connections may, and the
    payloads started meanwhile still get their pipes."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    with contextlib.ExitStack() as stack:
        server = start_server("--max-running", "16", wrap=_prlimit(512))
        stack.callback(server.stop)
        assert "connections: up to 256" in server.log()
        with server.client() as client:
            ids = [
                client.post(
                    "/payloads", json={"cmd": "/bin/sh", "params": ["-c", f"read x < {gate}"]}
                ).json()["id"]
                for _ in range(16)
            ]
            clients = stack.enter_context(stalled_clients(server.port, 2000))
            refused = wait_until(
                lambda: [r for s in clients if (r := answered(s)) and r.startswith(b"HTTP")],
                10,
                "answers past the limit",
            )
            assert all(r.startswith(b"HTTP/1.1 503 ") for r in refused)
            assert all(b"retry-after: 1" in r for r in refused)
            for sock in clients:
                sock.close()
            release_all(
                gate, lambda: all(is_terminal(client.get(f"/payloads/{i}").json()) for i in ids)
            )
            for payload_id in ids:
                assert wait_for_status(client, payload_id)["status"] == "finished"
        assert "Too many open files" not in server.log()


def _prlimit(limit: int) -> list[str]:
    return ["prlimit", f"--nofile={limit}:{limit}", "--"]


def test_start_raises_the_open_file_limit() -> None:
    server = start_server(wrap=_prlimit_soft(256))
    try:
        limit = wait_until(
            lambda: [line for line in server.log_lines if "open files: up to" in line], 5, "limit"
        )
        assert "open files: up to 4096;" in limit[0]
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        server.stop()


def _prlimit_soft(soft: int) -> list[str]:
    return ["prlimit", f"--nofile={soft}:4096", "--"]
