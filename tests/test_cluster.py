"""Many machines: API replicas and celery workers sharing one Redis, and what each failure does.

Workers on "different hosts" are separate process trees with their own `--hostname` (and
their own queues); every part is a real process: redis-server, handler-serve, pericles worker.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import CLUSTER, RedisServer, Worker, start_worker
from tests.helpers import (
    Server,
    SSEvent,
    group_members,
    is_terminal,
    post,
    release,
    run_serve,
    sse_events,
    start_server,
    wait_for_status,
    wait_until,
)

STORES = (CLUSTER,)
# Each test here starts its own replicas and workers (seconds each on shared cores): all but
# the quick start-up checks are marked slow, so `make test-fast` runs only those.
#: The liveness TTL the test workers run with (tests.cluster.start_worker).
TTL = 2.0


def replica(redis: RedisServer) -> Server:
    return start_server("--store", redis.url(), "--runner", "celery")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill or restart parts."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()


def _events(client: httpx.Client, url: str, last_id: str | None = None) -> Iterator[SSEvent]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with client.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        yield from sse_events(response.iter_lines())


@pytest.mark.slow
def test_queues_route_payloads_to_their_workers_and_sse_resumes_on_another_replica(
    cluster: tuple[RedisServer, Worker], tmp_path: Path
) -> None:
    redis, host_a = cluster
    host_b = start_worker(redis.url(), hostname="host-b", queues="gpu")
    one, two = replica(redis), replica(redis)
    try:
        with one.client() as a, two.client() as b:
            plain = post(a, "/bin/echo", "plain")
            assert "queue" not in plain  # the default queue is not named in the record
            assert wait_for_status(b, plain["id"])["worker"].startswith(f"{host_a.hostname}/")

            fifo = tmp_path / "gate"
            os.mkfifo(fifo)
            script = 'echo first; read x < "$0"; echo second'
            gpu = post(a, "/bin/sh", "-c", script, str(fifo), queue="gpu")
            url = f"/payloads/{gpu['id']}/events"
            # Follow on replica one until the first line, then resume on replica two.
            last_id = None
            for event in _events(a, url):
                if event.event == "output":
                    assert json.loads(event.data)["text"] == "first\n"
                    last_id = event.id
                    break
            assert last_id is not None
            release(fifo)
            rest = list(_events(b, url, last_id))
            texts = [json.loads(e.data)["text"] for e in rest if e.event == "output"]
            assert texts == ["second\n"]
            ended = b.get(f"/payloads/{gpu['id']}").json()
            assert ended["status"] == "finished"
            assert ended["worker"].startswith("host-b/")
            assert ended["queue"] == "gpu"
    finally:
        one.stop()
        two.stop()
        host_b.stop()


@pytest.mark.slow
def test_cancel_and_live_output_cross_replicas_and_hosts(
    cluster: tuple[RedisServer, Worker],
) -> None:
    redis, _ = cluster
    host_b = start_worker(redis.url(), hostname="host-b", queues="gpu")
    one, two = replica(redis), replica(redis)
    try:
        with one.client() as a, two.client() as b:
            record = post(a, "/bin/sh", "-c", "echo ready; exec sleep 60", queue="gpu")
            working = wait_for_status(b, record["id"], "working")

            def output() -> str | None:
                text = b.get(f"/payloads/{record['id']}/output").text
                return text if text else None

            assert wait_until(output, 10, "live output on the other replica") == "ready\n"
            started = time.monotonic()
            cancelled = b.post(f"/payloads/{record['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["status"] == "cancelled"
            assert time.monotonic() - started < 5
            assert a.get(f"/payloads/{record['id']}").json()["status"] == "cancelled"
            wait_until(lambda: not group_members(working["pid"]), 5, "the payload's group to go")
    finally:
        one.stop()
        two.stop()
        host_b.stop()


@pytest.mark.slow
def test_a_worker_killed_mid_payload_leaves_it_lost_then_the_janitor_kills_its_group(
    redis: RedisServer, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    worker = start_worker(redis.url(), hostname="host-k")
    api = replica(redis)
    try:
        with api.client() as client:
            record = post(client, "/bin/sh", "-c", 'echo once >> "$0"; exec sleep 60', str(ran))
            working = wait_for_status(client, record["id"], "working")
            wait_until(lambda: ran.exists(), 5, "the payload to run")
            killed_at = time.monotonic()
            worker.stop(signal.SIGKILL)
            lost = wait_for_status(client, record["id"], "lost", timeout=TTL + 5)
            detected = time.monotonic() - killed_at
            # Renewed every second, found by a reaper that looks every second.
            assert detected <= TTL + 2.5, detected
            assert lost["finished_at"] is not None
            # The worker died with its payload's group still running: the next worker on
            # the host kills it (whatever is left of it by then).
            worker = start_worker(redis.url(), hostname="host-k")
            wait_until(lambda: not group_members(working["pid"]), 10, "the janitor")
            # Never run again: the record stays lost and the file has one line.
            assert client.get(f"/payloads/{record['id']}").json()["status"] == "lost"
            assert ran.read_text() == "once\n"
    finally:
        api.stop()
        worker.stop()


@pytest.mark.slow
def test_redis_restarted_loses_nothing_acknowledged(redis: RedisServer) -> None:
    worker = start_worker(redis.url(), hostname="host-r")
    api = replica(redis)
    try:
        with api.client() as client:
            ids = [post(client, "/bin/echo", str(i))["id"] for i in range(20)]
            for payload_id in ids:
                wait_for_status(client, payload_id)
            waiting = post(client, "/bin/sh", "-c", "exec sleep 60", queue="nobody")
            redis.stop(signal.SIGKILL)
            redis.start()

            def answered() -> bool:
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(answered, 15, "the API to reach Redis again")
            for payload_id in ids:
                record = client.get(f"/payloads/{payload_id}").json()
                assert record["status"] == "finished", record
            assert client.get(f"/payloads/{waiting['id']}").json()["status"] == "pending"
            # Workers reconnect to the broker: a new payload runs.
            after = post(client, "/bin/echo", "after")
            try:
                wait_for_status(client, after["id"], timeout=30)
            except AssertionError:
                logs = api.log()[-3000:] + "\n=====\n" + worker.log()[-6000:]
                raise AssertionError(logs) from None
    finally:
        api.stop()
        worker.stop()


@pytest.mark.slow
def test_an_api_replica_killed_leaves_the_other_serving_everything(
    cluster: tuple[RedisServer, Worker], tmp_path: Path
) -> None:
    redis, _ = cluster
    one, two = replica(redis), replica(redis)
    try:
        fifo = tmp_path / "gate"
        os.mkfifo(fifo)
        with one.client() as a:
            gated = post(a, "/bin/sh", "-c", 'echo hello; read x < "$0"', str(fifo))
            sleeper = post(a, "/bin/sleep", "60")
            wait_for_status(a, sleeper["id"], "working")
        one.stop(signal.SIGKILL)
        with two.client() as b:
            release(fifo)
            done = wait_for_status(b, gated["id"])
            assert done["status"] == "finished"
            assert b.get(f"/payloads/{gated['id']}/output").text == "hello\n"
            listed = {r["id"] for r in b.get("/payloads").json()}
            assert {gated["id"], sleeper["id"]} <= listed
            cancelled = b.post(f"/payloads/{sleeper['id']}/cancel").json()
            assert cancelled["status"] == "cancelled"
            assert is_terminal(cancelled)
    finally:
        one.stop()
        two.stop()


def test_celery_needs_a_redis_store_in_one_line() -> None:
    result = run_serve("--runner", "celery")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "--runner celery needs a redis:// store" in result.stderr


def test_a_redis_store_works_with_the_local_runner(redis: RedisServer) -> None:
    server = start_server("--store", redis.url())
    try:
        with server.client() as client:
            record = post(client, "/bin/echo", "local")
            assert wait_for_status(client, record["id"])["status"] == "finished"
            assert client.get(f"/payloads/{record['id']}/output").text == "local\n"
            assert "worker" not in record or record["worker"] is None
    finally:
        server.stop()


@pytest.mark.slow
def test_a_replica_told_to_stop_ends_its_event_streams_and_exits_promptly(
    cluster: tuple[RedisServer, Worker],
) -> None:
    """SIGTERM with a payload running and event streams open: the streams end cleanly (their
    clients resume elsewhere) and the replica exits, long before its shutdown grace."""
    redis, _ = cluster
    grace = 60
    api = start_server("--store", redis.url(), "--runner", "celery", "--shutdown-grace", str(grace))
    other = replica(redis)
    followers: list[threading.Thread] = []
    ended: list[list[SSEvent]] = []
    try:
        with api.client() as client:
            record = post(client, "/bin/sh", "-c", "echo ready; exec sleep 60")
            wait_for_status(client, record["id"], "working")
            opened = threading.Barrier(3, timeout=10)

            def follow(url: str) -> None:
                with (
                    httpx.Client(base_url=api.url, timeout=grace) as own,
                    own.stream("GET", url) as response,
                ):
                    assert response.status_code == 200
                    opened.wait()
                    ended.append(list(sse_events(response.iter_lines())))

            for url in (f"/payloads/{record['id']}/events", "/events"):
                followers.append(threading.Thread(target=follow, args=(url,), daemon=True))
                followers[-1].start()
            opened.wait()
            told = time.monotonic()
            api.process.send_signal(signal.SIGTERM)
            assert api.process.wait(grace) == 0
            took = time.monotonic() - told
            assert took < grace / 4, took
            for follower in followers:
                follower.join(10)
            assert len(ended) == 2  # both streams ended as streams do, not with an error
            assert "timeout graceful shutdown exceeded" not in api.log()
            # The payload runs on; a client resumes on the other replica.
            with other.client() as b:
                assert b.get(f"/payloads/{record['id']}").json()["status"] == "working"
                b.post(f"/payloads/{record['id']}/cancel")
    finally:
        api.stop()
        other.stop()


@pytest.mark.slow
def test_a_worker_judges_each_payload_again_by_its_own_policy(
    redis: RedisServer, tmp_path: Path
) -> None:
    """The API admits anything (no policy); the worker's policy allows `echo` with one word
    param only: what it refuses ends as a start error naming the rule, and never runs."""
    ran = tmp_path / "ran"
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nname = "greet"\ncmd = "/bin/echo"\nparams = [{regex = "[a-z]+"}]\n'
        '[[rule]]\nname = "touch-nothing"\ncmd = "/bin/sh"\nparams = [{values = ["-c"]}, '
        '{values = ["true"]}]\n'
    )
    worker = start_worker(redis.url(), "--policy", str(rules), hostname="host-p")
    api = replica(redis)
    try:
        with api.client() as client:
            allowed = wait_for_status(client, post(client, "/bin/echo", "hello")["id"])
            assert allowed["status"] == "finished", allowed
            params_refused = wait_for_status(client, post(client, "/bin/echo", "HELLO")["id"])
            status = params_refused["status"]
            assert status.startswith("error:start('/bin/echo':refused by the worker's"), status
            assert "(rule greet)" in status, status
            assert "pid" not in params_refused
            # No rule matches: refused too, and the command never ran.
            script = post(client, "/bin/sh", "-c", f'echo ran > "{ran}"')
            unmatched = wait_for_status(client, script["id"])
            assert unmatched["status"].startswith("error:start('/bin/sh':refused"), unmatched
            assert not ran.exists()
    finally:
        api.stop()
        worker.stop()


def test_a_worker_with_a_bad_policy_file_stops_with_one_line(
    redis: RedisServer, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError) as failed:
        start_worker(redis.url(), "--policy", str(tmp_path / "missing.toml"), timeout=20)
    text = str(failed.value)
    assert "pericles worker:" in text, text
    assert "missing.toml" in text, text
    assert "Traceback" not in text, text


SECRET = "s3cr3t-value-that-no-record-may-hold"


def _redis_holds(redis: RedisServer, text: bytes) -> list[str]:
    """The keys of every kind whose contents hold `text`."""
    import redis as redis_py

    # Loosely typed, as in the store: redis-py types each reply as a union of many forms.
    client: Any = redis_py.Redis.from_url(redis.url())
    found = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            values: Any
            if kind == "string":
                values = client.get(key)
            elif kind == "hash":
                values = client.hgetall(key)
            elif kind == "list":
                values = client.lrange(key, 0, -1)
            elif kind == "set":
                values = client.smembers(key)
            elif kind == "zset":
                values = client.zrange(key, 0, -1)
            else:  # stream
                values = client.xrange(key)
            if text in repr(values).encode():
                found.append(key.decode())
    finally:
        client.close()
    return found


@pytest.mark.slow
def test_secret_env_crosses_the_broker_sealed_and_never_rests_in_redis(
    redis: RedisServer, tmp_path: Path
) -> None:
    key = tmp_path / "secrets.key"
    key.write_text("k" * 8 + "-a-key-of-forty-characters-or-so-" + "\n")
    worker = start_worker(redis.url(), "--secrets-key-file", str(key), hostname="host-s")
    keyless = start_worker(redis.url(), hostname="host-n", queues="keyless")
    api = start_server("--store", redis.url(), "--runner", "celery", "--secrets-key-file", str(key))
    plain = replica(redis)
    try:
        with api.client() as client, plain.client() as other:
            script = 'echo "${#TOKEN}"; echo "$TOKEN"'
            # Waiting in its queue: the message holds the value sealed, Redis nowhere plain.
            waiting = post(
                client, "/bin/sh", "-c", script, queue="later", secret_env={"TOKEN": SECRET}
            )
            assert waiting["secret_env_names"] == ["TOKEN"]
            assert _redis_holds(redis, b"later") != []  # the queued message is there
            assert _redis_holds(redis, SECRET.encode()) == []
            record = post(client, "/bin/sh", "-c", script, secret_env={"TOKEN": SECRET})
            done = wait_for_status(client, record["id"])
            assert done["status"] == "finished", done
            assert client.get(f"/payloads/{record['id']}/output").text == f"{len(SECRET)}\n***\n"
            assert _redis_holds(redis, SECRET.encode()) == []
            # A worker without the key never runs it without its secrets.
            blind = post(
                client, "/bin/sh", "-c", script, queue="keyless", secret_env={"TOKEN": SECRET}
            )
            ended = wait_for_status(client, blind["id"])
            assert ended["status"].startswith("error:start('/bin/sh':its secret_env values "), ended
            assert "--secrets-key-file" in ended["status"]
            # A replica without the key refuses secret_env: a 422 naming the flag.
            refused = other.post(
                "/payloads", json={"cmd": "/bin/true", "secret_env": {"TOKEN": SECRET}}
            )
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert "--secrets-key-file" in refused.text
            assert SECRET not in refused.text
    finally:
        api.stop()
        plain.stop()
        worker.stop()
        keyless.stop()
    assert SECRET not in api.log() + worker.log() + keyless.log()


@pytest.mark.slow
def test_retention_holds_across_replicas(cluster: tuple[RedisServer, Worker]) -> None:
    """--keep-finished on two replicas: the oldest ended payloads are forgotten (by one of
    them), a running one never; both lists agree."""
    redis, _ = cluster
    flags = ("--store", redis.url(), "--runner", "celery", "--keep-finished", "2")
    one, two = start_server(*flags, "--heartbeat", "0.2"), start_server(*flags)
    try:
        with one.client() as a, two.client() as b:
            running = post(a, "/bin/sleep", "60")
            wait_for_status(a, running["id"], "working")
            ids = []
            for i in range(5):  # one after the other: their end order is known
                ids.append(post(b, "/bin/echo", str(i))["id"])
                wait_for_status(b, ids[-1])

            def ended(client: httpx.Client) -> set[str]:
                return {r["id"] for r in client.get("/payloads").json() if is_terminal(r)}

            wanted = set(ids[-2:])  # also of the payloads the module's other tests ran
            wait_until(lambda: ended(a) == wanted, 10, "the oldest ended payloads to go")
            assert ended(b) == wanted
            assert b.get(f"/payloads/{running['id']}").json()["status"] == "working"
            assert b.get(f"/payloads/{ids[0]}").status_code == 404
            assert a.get(f"/payloads/{ids[0]}/output").status_code == 404
            a.post(f"/payloads/{running['id']}/cancel")
    finally:
        one.stop()
        two.stop()


@pytest.mark.slow
def test_callbacks_of_worker_payloads_are_sent_once_and_logged_on_every_replica(
    cluster: tuple[RedisServer, Worker],
) -> None:
    """Two replicas hear every change; one of them sends each event, signed; either one
    shows the deliveries; a redelivery asked of the other is sent too."""
    from tests.test_callbacks import SECRET as CALLBACK_SECRET
    from tests.test_callbacks import running_receiver, verifies

    redis, _ = cluster
    flags = (
        *("--store", redis.url(), "--runner", "celery", "--callback-backoff", "0.05"),
        *("--callback-secret", CALLBACK_SECRET, "--callback-allow", "127.0.0.1/32"),
    )
    with running_receiver() as receiver:
        one, two = start_server(*flags), start_server(*flags)
        try:
            with one.client() as a, two.client() as b:
                hooks = [
                    {"url": receiver.url("/ok"), "events": ["started", "finished"]},
                    {"url": receiver.url("/fail/1")},
                ]
                record = post(a, "/bin/sh", "-c", "echo hi", callbacks=hooks)
                assert wait_for_status(b, record["id"])["status"] == "finished"

                def settled() -> list[dict[str, Any]] | None:
                    found: list[dict[str, Any]] = b.get(
                        f"/payloads/{record['id']}/deliveries"
                    ).json()["deliveries"]
                    done = len(found) == 3 and all(d["state"] == "delivered" for d in found)
                    return found if done else None

                logged = wait_until(settled, 20, "the deliveries to be sent")
                assert sorted(d["event"] for d in logged) == ["finished", "finished", "started"]
                retried = [d for d in logged if d["url"].endswith("/fail/1")]
                assert [x["status_code"] for x in retried[0]["attempts"]] == [503, 204]
                # Each event once, whatever the number of replicas that heard it.
                assert a.get(f"/payloads/{record['id']}/deliveries").json()["deliveries"] == (
                    logged
                )
                assert sorted(receiver.accepted) == sorted(d["id"] for d in logged)
                assert len(receiver.requests) == 4  # three deliveries, one retry
                assert all(verifies(got) for got in receiver.accepted.values())
                again = a.post(f"/payloads/{record['id']}/deliveries/{logged[0]['id']}/redeliver")
                assert again.status_code in (200, 201, 202), again.text
                wait_until(lambda: len(receiver.accepted) == 4, 20, "the redelivery")
        finally:
            one.stop()
            two.stop()


def test_the_worker_flags_shared_with_handler_serve_say_the_same() -> None:
    from pericles.cli.worker import SHARED_HELP
    from pericles.settings import Settings

    for field, text in SHARED_HELP.items():
        assert Settings.model_fields[field].description == text, field
