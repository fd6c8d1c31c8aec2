"""Captured output: bounded, ordered, readable from any offset, followed live."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import httpx
import pytest

from tests.cluster import WITH_CLUSTER
from tests.helpers import Server, post, release, server_rss, wait_for_status, wait_until

STORES = WITH_CLUSTER

MiB = 1024 * 1024


def gated(fifo: Path, before: str, after: str) -> list[str]:
    """A shell payload that prints `before`, waits for the fifo, then prints `after`."""
    script = f'printf "{before}"; read x < "$0"; printf "{after}"'
    return ["/bin/sh", "-c", script, str(fifo)]


@pytest.mark.slow
def test_fifty_megabytes_keep_head_and_tail_in_bounded_memory(
    server: Server, client: httpx.Client
) -> None:
    # 50 MB of numbered lines: each line says where it is, so head and tail can be checked.
    script = "seq -w 1 10000000 | head -c 50000000"
    before = server_rss(server.pid)
    done = wait_for_status(client, post(client, "/bin/sh", "-c", script)["id"], timeout=120)
    grown = server_rss(server.pid) - before
    assert done["status"] == "finished"
    assert done["stdout_bytes"] == 50_000_000
    assert done["stdout_dropped"] == 50_000_000 - MiB
    assert grown < 50 * MiB, f"server RSS grew by {grown} bytes"

    def expected(start: int, end: int) -> bytes:
        """Bytes `start` to `end` of the output: line n (from 1) is n in 8 digits and a newline."""
        first, last = start // 9, (end + 8) // 9
        text = "".join(f"{n:08d}\n" for n in range(first + 1, last + 1)).encode()
        return text[start - first * 9 : end - first * 9]

    response = client.get(f"/payloads/{done['id']}/output", params={"stream": "stdout"})
    assert response.headers["pericles-output-dropped"] == str(50_000_000 - MiB)
    assert response.content == expected(0, MiB // 2) + expected(50_000_000 - MiB // 2, 50_000_000)
    tail = client.get(
        f"/payloads/{done['id']}/output", params={"stream": "stdout", "offset": 49_600_000}
    )
    assert tail.content == expected(49_600_000, 50_000_000)
    assert "pericles-output-dropped" not in tail.headers
    assert tail.headers["pericles-output-next-offset"] == "50000000"


def test_both_streams_interleave_in_the_order_written(client: httpx.Client, tmp_path: Path) -> None:
    # Each line waits for the one before to be read by the server: a slow, strict alternation.
    # A read that meets the end of our previous write, with no line, tries again.
    script = """
step() { until read x < "$1"; do :; done; }
for i in 1 2 3 4 5; do
  echo "out $i"; step "$0"
  echo "err $i" >&2; step "$0"
done
"""
    fifo = tmp_path / "step"
    os.mkfifo(fifo)
    record = post(client, "/bin/sh", "-c", script, str(fifo))
    url = f"/payloads/{record['id']}/output"
    expected = ""
    for i in range(1, 6):
        for stream in ("out", "err"):
            expected += f"{stream} {i}\n"
            wait_until_output(client, url, expected)
            release(fifo)
    done = wait_for_status(client, record["id"])
    assert done["status"] == "finished"
    assert client.get(url, params={"stream": "both"}).text == expected
    assert client.get(url).text == expected  # both is the default
    assert client.get(url, params={"stream": "stdout"}).text == "".join(
        f"out {i}\n" for i in range(1, 6)
    )
    assert client.get(url, params={"stream": "stderr", "offset": 6}).text == "".join(
        f"err {i}\n" for i in range(2, 6)
    )
    assert client.get(url, params={"stream": "both", "offset": 12}).text == expected[12:]


def wait_until_output(client: httpx.Client, url: str, expected: str) -> None:
    from tests.helpers import wait_until

    wait_until(lambda: client.get(url).text == expected, 10, f"output {expected!r}")


def test_follow_streams_output_before_the_process_ends(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    record = post(client, *gated(fifo, "first\\n", "second\\n"))
    url = f"/payloads/{record['id']}/output"
    with client.stream("GET", url, params={"follow": "true"}) as response:
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        chunks = response.iter_text()
        assert next(chunks) == "first\n"
        release(fifo)
        assert "".join(chunks) == "second\n"


def test_follow_resumes_from_an_offset_without_loss(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    record = post(client, *gated(fifo, "0123456789", "abcdefghij"))
    url = f"/payloads/{record['id']}/output"
    received = b""
    with client.stream("GET", url, params={"follow": "true"}) as response:
        received += next(response.iter_bytes())
    # Disconnected mid-stream; the rest comes from the offset reached.
    release(fifo)
    with client.stream("GET", url, params={"follow": "true", "offset": len(received)}) as response:
        received += b"".join(response.iter_bytes())
    assert received == b"0123456789abcdefghij"


def test_binary_and_invalid_utf8_are_replaced_never_an_error(client: httpx.Client) -> None:
    # \351 alone is invalid UTF-8; \303\251 is a valid é; \000 a NUL byte.
    script = r"printf 'caf\351 caf\303\251 \000end'"
    done = wait_for_status(client, post(client, "/bin/sh", "-c", script)["id"])
    assert done["stdout_bytes"] == len(b"caf\xe9 caf\xc3\xa9 \x00end")
    response = client.get(f"/payloads/{done['id']}/output")
    assert response.status_code == 200
    assert response.text == "caf\ufffd café \x00end"


def test_output_of_an_unknown_payload_is_404(client: httpx.Client) -> None:
    response = client.get("/payloads/0d111286d6fb4f7ebd7464082bada101/output")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    follow = client.get(
        "/payloads/0d111286d6fb4f7ebd7464082bada101/output", params={"follow": "true"}
    )
    assert follow.status_code == 404


def test_bad_output_parameters_are_422(client: httpx.Client) -> None:
    record = post(client, "/bin/true")
    url = f"/payloads/{record['id']}/output"
    for params in ({"stream": "stdin"}, {"offset": "-1"}, {"offset": "x"}, {"follow": "maybe"}):
        response = client.get(url, params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"


def test_wait_returns_as_soon_as_the_payload_ends(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    record = post(client, *gated(fifo, "", "done"))
    wait_for_status(client, record["id"], "working")
    # Were the wait not cut short by the end, it would outlast the test's timeout.
    releaser = threading.Thread(target=release, args=(fifo,))
    releaser.start()
    response = client.get(f"/payloads/{record['id']}", params={"wait": 300}, timeout=310)
    releaser.join()
    assert response.json()["status"] == "finished"


def test_wait_times_out_with_the_current_record(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    record = post(client, *gated(fifo, "12345", ""))
    wait_until(
        lambda: client.get(f"/payloads/{record['id']}").json()["stdout_bytes"] == 5,
        10,
        "its first output",
    )
    response = client.get(f"/payloads/{record['id']}", params={"wait": 0.2})
    assert response.status_code == 200
    # Output does not end the wait, yet the record it answers with counts all of it so far.
    assert response.json()["status"] == "working"
    assert response.json()["stdout_bytes"] == 5
    release(fifo)
    assert wait_for_status(client, record["id"])["status"] == "finished"


def test_bad_wait_is_422(client: httpx.Client) -> None:
    record = post(client, "/bin/true")
    for wait in ("0", "-1", "301", "soon"):
        response = client.get(f"/payloads/{record['id']}", params={"wait": wait})
        assert response.status_code == 422, wait


def test_output_checksum_through_follow(client: httpx.Client) -> None:
    # 600 KB of printable text through follow: what arrives is what was written.
    script = "seq 1 100000"
    record = post(client, "/bin/sh", "-c", script)
    url = f"/payloads/{record['id']}/output"
    with client.stream("GET", url, params={"follow": "true", "stream": "stdout"}) as response:
        body = b"".join(response.iter_bytes())
    expected = "".join(f"{i}\n" for i in range(1, 100_001)).encode()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(expected).hexdigest()
