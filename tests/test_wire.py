"""What goes over the connection: a small answer in one piece, a held head never stuck."""

from __future__ import annotations

import json
import select
import socket
import time

import httpx

from tests.helpers import Server, post, wait_for_status

STORES = ("memory",)


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _first_read(sock: socket.socket) -> bytes:
    """What one `recv` returns once anything has arrived (within 10 s)."""
    readable, _, _ = select.select([sock], [], [], 10)
    assert readable, "no answer within 10 s"
    return sock.recv(1 << 20)


def _until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    deadline = time.monotonic() + 10
    while marker not in data:
        assert time.monotonic() < deadline, data
        chunk = _first_read(sock)
        assert chunk, data
        data += chunk
    return data


def test_a_small_answer_arrives_in_one_piece(server: Server, client: httpx.Client) -> None:
    record = post(client, "/bin/true")
    wait_for_status(client, record["id"])
    request = f"GET /payloads/{record['id']} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    with _connect(server) as sock:
        # The client reads as soon as anything arrives: a head sent apart from its body
        # would come alone at least once in twenty.
        for _ in range(20):
            sock.sendall(request)
            answer = _first_read(sock)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), answer
            length = [line for line in head.split(b"\r\n") if line.startswith(b"content-length")]
            assert length, answer
            assert int(length[0].split(b":")[1]) == len(body), answer
            assert json.loads(body)["id"] == record["id"]


def test_a_continue_is_sent_before_the_body_it_asks_for(server: Server) -> None:
    body = json.dumps({"cmd": "/bin/true", "params": []}).encode()
    head = (
        "POST /payloads HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n"
    ).encode()
    with _connect(server) as sock:
        sock.sendall(head)
        # Held back like any first write, it must still go out on its own: the client
        # sends nothing more until it has it.
        interim = _until(sock, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(body)
        answer = _until(sock, b"\r\n\r\n", interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :])
        assert answer.startswith(b"HTTP/1.1 201 "), answer


def test_an_event_stream_head_comes_before_any_event(server: Server, client: httpx.Client) -> None:
    record = post(client, "/bin/cat", stdin="pipe")
    wait_for_status(client, record["id"], "working")
    request = (
        f"GET /payloads/{record['id']}/output?follow=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    ).encode()
    try:
        with _connect(server) as sock:
            sock.sendall(request)
            answer = _until(sock, b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 "), answer
    finally:
        client.post(f"/payloads/{record['id']}/stdin", json={"close": True})
        wait_for_status(client, record["id"])
