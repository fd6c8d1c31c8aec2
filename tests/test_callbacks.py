"""Callbacks: signed, retried, logged deliveries to a real receiver on loopback."""

from __future__ import annotations

import collections
import hashlib
import hmac
import http.server
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Server, post, running_server, start_server, wait_for_status, wait_until

STORES = ("memory",)
SECRET = "receiver-shared-secret"
#: Fast retries for tests: the first after ~50 ms.
FAST = ("--callback-backoff", "0.05", "--callback-secret", SECRET)


@dataclass
class Received:
    delivery: str
    event: str
    timestamp: str
    signature: str | None
    body: bytes


@dataclass
class Receiver:
    """An HTTP receiver on loopback whose paths say how it answers:

    - `/ok`: 204 at once;
    - `/fail/N`: 503 to the first N tries of each delivery, then 200;
    - `/busy` (`/busy/N`): 429 with `Retry-After: 1` (N) to a delivery's first try, then 200;
    - `/close/N`: the first N tries of each delivery get the connection closed, no answer;
    - `/hold`: answers once `release` is set;
    - `/stall`: the first try of each delivery gets no answer for 5 s (the server times out).

    It dedupes on `Pericles-Delivery`: `accepted` holds each delivery answered 2xx once.
    """

    port: int = 0
    tries: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: list[Received] = field(default_factory=list)
    accepted: dict[str, Received] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer(self, path: str, got: Received) -> tuple[int, dict[str, str]] | None:
        with self.lock:
            self.requests.append(got)
            self.tries[got.delivery] += 1
            tries = self.tries[got.delivery]
        if path.startswith("/fail/") and tries <= int(path.rsplit("/", 1)[1]):
            return 503, {}
        if path.startswith("/busy") and tries == 1:
            return 429, {"Retry-After": path.removeprefix("/busy").strip("/") or "1"}
        if path.startswith("/close/") and tries <= int(path.rsplit("/", 1)[1]):
            return None
        if path == "/hold":
            self.holding.set()
            self.release.wait(30)
        if path == "/stall" and tries == 1:
            self.release.wait(5)
            return None
        with self.lock:
            self.accepted.setdefault(got.delivery, got)
        return 204, {}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A `Receiver` on a free loopback port, until the block ends."""
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got = Received(
                self.headers["Pericles-Delivery"],
                self.headers["Pericles-Event"],
                self.headers["Pericles-Timestamp"],
                self.headers.get("Pericles-Signature"),
                body,
            )
            answer = state.answer(self.path, got)
            if answer is None:
                self.close_connection = True
                return
            code, headers = answer
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def allowed(receiver: Receiver) -> Iterator[Server]:
    """A server allowed to call the receiver on loopback, with fast retries."""
    with running_server(
        *FAST,
        "--callback-allow",
        "127.0.0.1/32",
        "--callback-timeout",
        "2",
        "--callback-concurrency",
        "4",
    ) as srv:
        yield srv


def deliveries(client: httpx.Client, payload_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/payloads/{payload_id}/deliveries")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def settled(client: httpx.Client, payload_id: str, count: int) -> list[dict[str, Any]]:
    """The payload's `count` deliveries once none is pending."""

    def check() -> list[dict[str, Any]] | None:
        found = deliveries(client, payload_id)
        done = len(found) == count and all(d["state"] != "pending" for d in found)
        return found if done else None

    return wait_until(check, 20, f"the deliveries of {payload_id} to settle")


def verifies(got: Received) -> bool:
    """What a receiver does (as the README shows)."""
    mac = hmac.new(SECRET.encode(), got.timestamp.encode() + b"." + got.body, hashlib.sha256)
    return got.signature is not None and hmac.compare_digest(got.signature, "v1=" + mac.hexdigest())


def test_every_end_is_delivered_once_signed_and_logged(allowed: Server, receiver: Receiver) -> None:
    paths = ["/ok", "/fail/2", "/busy", "/close/1", "/stall"]
    with allowed.client() as client:
        payloads = []
        for path in paths:
            callbacks = [{"url": receiver.url(path)}]
            payloads.append(post(client, "/bin/sh", "-c", "exit 3", callbacks=callbacks))
        started = post(
            client,
            "/bin/true",
            callbacks=[{"url": receiver.url("/ok"), "events": ["started", "finished"]}],
        )
        for record in payloads:
            wait_for_status(client, record["id"])
        logs = {
            path: settled(client, record["id"], 1)[0]
            for path, record in zip(paths, payloads, strict=True)
        }
        two = settled(client, started["id"], 2)
        metrics = client.get("/metrics").text

    assert all(log["state"] == "delivered" for log in logs.values()), logs
    codes = {path: [a["status_code"] for a in log["attempts"]] for path, log in logs.items()}
    assert codes["/ok"] == [204]
    assert codes["/fail/2"] == [503, 503, 204]
    assert codes["/busy"] == [429, 204]
    assert codes["/close/1"] == [None, 204]
    assert logs["/close/1"]["attempts"][0]["error"]
    assert codes["/stall"] == [None, 204]
    assert logs["/stall"]["attempts"][0]["error"]
    # Retry-After: 1 wins over the 50 ms backoff.
    busy = logs["/busy"]["attempts"]
    assert busy[1]["at"] > busy[0]["at"]
    gap = _seconds(busy[1]["at"]) - _seconds(busy[0]["at"])
    assert gap >= 0.9, busy
    assert [d["event"] for d in two] == ["started", "finished"]
    assert all(d["state"] == "delivered" for d in two)

    # The receiver, deduping on Pericles-Delivery, got each event of each payload once, signed.
    ids = {log["id"] for log in logs.values()} | {d["id"] for d in two}
    assert ids <= receiver.accepted.keys()
    for delivery_id in ids:
        got = receiver.accepted[delivery_id]
        assert verifies(got), got
        assert not verifies(Received(got.delivery, got.event, got.timestamp, got.signature, b"{}"))
    by_payload = collections.Counter(
        re.search(rb'"id":"([0-9a-f]{32})"', receiver.accepted[i].body).group(1)  # type: ignore[union-attr]
        for i in ids
    )
    assert sorted(by_payload.values()) == [1] * len(paths) + [2]
    finished = receiver.accepted[two[1]["id"]]
    assert finished.event == "finished"
    assert b'"status":"finished"' in finished.body
    assert 'pericles_callbacks_total{outcome="delivered"}' in metrics
    assert 'pericles_callbacks_total{outcome="retry"}' in metrics
    assert "pericles_callback_backlog" in metrics
    assert "pericles_callback_duration_seconds_bucket" in metrics


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def test_a_slow_receiver_holds_neither_payloads_nor_other_deliveries(
    allowed: Server, receiver: Receiver
) -> None:
    with allowed.client() as client:
        held = post(client, "/bin/true", callbacks=[{"url": receiver.url("/hold")}])
        wait_until(receiver.holding.is_set, 10, "the receiver to hold a delivery")
        others = [
            post(client, "/bin/true", callbacks=[{"url": receiver.url("/ok")}]) for _ in range(3)
        ]
        for record in others:
            assert settled(client, record["id"], 1)[0]["state"] == "delivered"
        assert wait_for_status(client, held["id"])["status"] == "finished"
        receiver.release.set()
        assert settled(client, held["id"], 1)[0]["state"] == "delivered"


def test_redeliver_sends_the_same_body_as_a_new_delivery(
    allowed: Server, receiver: Receiver
) -> None:
    with allowed.client() as client:
        record = post(client, "/bin/true", callbacks=[{"url": receiver.url("/ok")}])
        first = settled(client, record["id"], 1)[0]
        response = client.post(f"/payloads/{record['id']}/deliveries/{first['id']}/redeliver")
        assert response.status_code == 202, response.text
        again = response.json()
        assert again["redelivery_of"] == first["id"]
        assert again["id"] != first["id"]
        settled(client, record["id"], 2)
        assert receiver.accepted[again["id"]].body == receiver.accepted[first["id"]].body
        missing = client.post(f"/payloads/{record['id']}/deliveries/{'0' * 32}/redeliver")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert client.get(f"/payloads/{'0' * 32}/deliveries").status_code == 404


@pytest.mark.parametrize(
    ("callbacks", "where"),
    [
        ([{"url": "ftp://example.com/x"}], "callbacks.0.url"),
        ([{"url": "http://example.com/x", "events": ["pending"]}], "callbacks.0.events.0"),
        ([{"url": "http://example.com/x", "events": []}], "callbacks.0.events"),
        ([{"url": "http://user:pw@example.com/x"}], "callbacks.0.url"),
        ([{"url": "http://example.com/x", "secret": "x"}], "callbacks.0.secret"),
        ("http://example.com/x", "callbacks"),
    ],
)
def test_bad_callbacks_are_refused(allowed: Server, callbacks: Any, where: str) -> None:
    with allowed.client() as client:
        before = len(client.get("/payloads").json())
        response = client.post("/payloads", json={"cmd": "/bin/true", "callbacks": callbacks})
        assert response.status_code == 422, response.text
        assert where in response.text
        assert len(client.get("/payloads").json()) == before


def test_private_addresses_are_refused_without_the_allow_flag(receiver: Receiver) -> None:
    before = len(receiver.requests)
    targets = [
        receiver.url("/ok"),
        receiver.url("/ok", "localhost"),  # a name that resolves to loopback
        receiver.url("/ok", "[::1]"),
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]:1/",
    ]
    with running_server(*FAST, "--callback-url", receiver.url("/ok")) as srv, srv.client() as c:
        record = post(c, "/bin/true", callbacks=[{"url": url} for url in targets])
        found = settled(c, record["id"], len(targets) + 1)
    assert all(d["state"] == "failed" and len(d["attempts"]) == 1 for d in found), found
    errors = [d["attempts"][0]["error"] for d in found]
    assert all("--callback-allow" in e for e in errors), errors
    assert "loopback" in errors[0]
    assert "link-local" in errors[3]
    assert "private" in errors[4]
    assert len(receiver.requests) == before


def test_sqlite_restart_mid_retry_resumes(receiver: Receiver, tmp_path: Path) -> None:
    store = ("--store", f"sqlite:///{tmp_path / 'p.db'}", "--callback-allow", "127.0.0.1")
    first = start_server(*FAST, *store)
    try:
        with first.client() as client:
            record = post(client, "/bin/true", callbacks=[{"url": receiver.url("/busy/3")}])

            def tried() -> list[dict[str, Any]] | None:
                found = deliveries(client, record["id"])
                return found if found and found[0]["attempts"] else None

            waiting = wait_until(tried, 10, "the first attempt")[0]
    finally:
        first.stop(signal.SIGTERM)
    # 429 with Retry-After: 3 was answered; the server stopped before trying again.
    assert waiting["state"] == "pending"
    assert waiting["next_attempt_at"]
    assert receiver.tries[waiting["id"]] == 1
    with running_server(*FAST, *store) as second, second.client() as client:
        done = settled(client, record["id"], 1)[0]
    assert done["id"] == waiting["id"]
    assert done["state"] == "delivered"
    assert [a["status_code"] for a in done["attempts"]] == [429, 204]
    assert receiver.tries[done["id"]] == 2
    assert verifies(receiver.accepted[done["id"]])


def test_a_token_with_its_own_callback_secret_signs_with_it(
    receiver: Receiver, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        '[[token]]\nname = "ci"\nsecret = "ci-token-0123456789"\nscope = "run"\n'
        'callback_secret = "ci-own-callback-key"\n\n'
        '[[token]]\nname = "bot"\nsecret = "bot-token-0123456789"\nscope = "run"\n'
    )
    args = (*FAST, "--tokens-file", str(tokens), "--callback-allow", "127.0.0.1")
    with running_server(*args) as srv:
        signed = {}
        for name in ("ci", "bot"):
            auth = {"Authorization": f"Bearer {name}-token-0123456789"}
            with srv.client(headers=auth) as client:
                record = post(client, "/bin/true", callbacks=[{"url": receiver.url("/ok")}])
                signed[name] = receiver.accepted[settled(client, record["id"], 1)[0]["id"]]
    ci = signed["ci"]
    mac = hmac.new(b"ci-own-callback-key", ci.timestamp.encode() + b"." + ci.body, hashlib.sha256)
    assert ci.signature == "v1=" + mac.hexdigest()
    assert not verifies(ci)
    assert verifies(signed["bot"])  # no key of its own: --callback-secret
