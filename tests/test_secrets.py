"""secret_env: it reaches the process, and nothing the server keeps or says shows it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pericles.redact import Redactor
from tests.helpers import Server, post, release, wait_for_status, wait_until

SECRET = "s3cr3t-Value-9f8e7d"


def everything_said_about(client: httpx.Client, payload_id: str) -> str:
    """Every answer about one payload: record, list, output, events, feed."""
    parts = [
        client.get(f"/payloads/{payload_id}").text,
        client.get("/payloads").text,
        client.get(f"/payloads/{payload_id}/output?stream=both").text,
        client.get(f"/payloads/{payload_id}/events").text,
    ]
    return "\n".join(parts)


def test_the_secret_reaches_the_process_and_is_masked_in_output(
    client: httpx.Client, server: Server
) -> None:
    script = 'printf "%s\\n" "$TOKEN"; printf "x%sy\\n" "$TOKEN" >&2'
    record = post(client, "/bin/sh", "-c", script, secret_env={"TOKEN": SECRET})
    assert "secret_env" not in record
    done = wait_for_status(client, record["id"])
    assert done["exit_code"] == 0
    assert client.get(f"/payloads/{record['id']}/output?stream=stdout").text == "***\n"
    assert client.get(f"/payloads/{record['id']}/output?stream=stderr").text == "x***y\n"
    # Offsets and counts are of the masked stream.
    assert done["stdout_bytes"] == len("***\n")
    said = everything_said_about(client, record["id"])
    assert SECRET not in said
    assert SECRET not in server.log()


def test_a_secret_split_across_two_writes_is_masked(
    client: httpx.Client, server: Server, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    half = len(SECRET) // 2
    prefix = "p" * 64  # released at once, which shows the first write was read
    script = (
        f'printf "%s" "{prefix}{SECRET[:half]}"; read x < "$0"; printf "%s!\\n" "{SECRET[half:]}"'
    )
    record = post(client, "/bin/sh", "-c", script, str(fifo), secret_env={"TOKEN": SECRET})
    payload_id = record["id"]

    def first_write_read() -> dict[str, Any] | None:
        current: dict[str, Any] = client.get(f"/payloads/{payload_id}").json()
        return current if current["stdout_bytes"] > 0 else None

    seen = wait_until(first_write_read, what="the first half to be read")
    # Everything but what may be the start of the secret is out already.
    assert seen["stdout_bytes"] == len(prefix)
    release(fifo)
    wait_for_status(client, payload_id)
    assert client.get(f"/payloads/{payload_id}/output").text == prefix + "***!\n"
    # The script's own text holds the halves (params are not secret), the output does not.
    assert SECRET not in client.get(f"/payloads/{payload_id}/output").text
    assert SECRET not in server.log()


def test_no_secret_in_another_payloads_environment(client: httpx.Client, tmp_path: Path) -> None:
    gates = [tmp_path / "a", tmp_path / "b"]
    for gate in gates:
        os.mkfifo(gate)
    wait = 'read x < "$0"'
    holder = post(client, "/bin/sh", "-c", wait, str(gates[0]), secret_env={"TOKEN": SECRET})
    other = post(client, "/bin/sh", "-c", wait, str(gates[1]), env={"PLAIN": "1"})
    pids = [wait_for_status(client, r["id"], "working")["pid"] for r in (holder, other)]
    environs = [Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in pids]
    assert f"TOKEN={SECRET}".encode() in environs[0]
    assert not any(SECRET.encode() in entry for entry in environs[1])
    for gate in gates:
        release(gate)
    for record in (holder, other):
        wait_for_status(client, record["id"])


def test_refusals_never_echo_a_secret(client: httpx.Client) -> None:
    body = {"cmd": "/bin/true", "env": {"TOKEN": "x"}, "secret_env": {"TOKEN": SECRET}}
    response = client.post("/payloads", json=body)
    assert response.status_code == 422
    assert SECRET not in response.text
    response = client.post(
        "/payloads", json={"cmd": "/bin/true", "secret_env": {"A": f"{SECRET}\0"}}
    )
    assert response.status_code == 422
    assert SECRET not in response.text


@given(
    data=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    secrets=st.lists(st.text("ab\n", min_size=1, max_size=6), min_size=1, max_size=3),
)
def test_redaction_does_not_depend_on_where_reads_split(
    data: bytes, cuts: list[int], secrets: list[str]
) -> None:
    whole = Redactor(secrets)
    expected = whole.feed("stdout", data) + whole.flush("stdout")
    split = Redactor(secrets)
    out = b""
    start = 0
    for cut in sorted(cuts):
        out += split.feed("stdout", data[start:cut])
        start = max(start, cut)
    out += split.feed("stdout", data[start:]) + split.flush("stdout")
    assert out == expected
    for secret in secrets:
        assert secret.encode() not in out


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ({"cmd": f"/bin/{SECRET}"}, "cmd"),
        ({"params": ["ok", f"--password={SECRET}"]}, "params.1"),
        ({"env": {"OTHER": f"x{SECRET}x"}}, "env.OTHER"),
        ({"env": {f"N{SECRET}": "x"}}, "a name in env"),
        ({"labels": {"k": SECRET}}, "labels.k"),
        ({"labels": {SECRET: "v"}}, "a name in labels"),
        ({"cwd": f"/tmp/{SECRET}"}, "cwd"),
        ({"stdin": f"user\n{SECRET}\n"}, "stdin"),
    ],
)
def test_a_secret_given_outside_secret_env_is_refused_unquoted(
    server: Server, client: httpx.Client, field: dict[str, Any], where: str
) -> None:
    before = len(client.get("/payloads").json())
    body = {"cmd": "/bin/true", **field, "secret_env": {"TOKEN": SECRET}}
    for path in ("/payloads", "/payloads/check"):
        response = client.post(path, json=body)
        assert response.status_code == 422, response.text
        assert SECRET not in response.text
        assert f"{where} contains the value of secret_env TOKEN" in response.text
    assert len(client.get("/payloads").json()) == before
    assert SECRET not in server.log()


def test_sealed_secrets_open_only_with_the_key_and_for_their_payload(tmp_path: Path) -> None:
    """The celery runner's sealing: values readable with the same key, for the same payload
    only; the sealed text holds no value; a short key is refused in one line."""
    from pericles.errors import SecretsKeyError
    from pericles.runner.celery import Sealer

    key, other = tmp_path / "key", tmp_path / "other"
    key.write_text("x" * 40)
    other.write_text("y" * 40)
    sealed = Sealer(key).seal("p1", {"TOKEN": SECRET})
    assert SECRET not in sealed
    assert Sealer(key).open("p1", sealed) == {"TOKEN": SECRET}
    with pytest.raises(SecretsKeyError, match="not sealed with this worker's"):
        Sealer(other).open("p1", sealed)
    with pytest.raises(SecretsKeyError, match="another payload"):
        Sealer(key).open("p2", sealed)
    short = tmp_path / "short"
    short.write_text("too short")
    with pytest.raises(SecretsKeyError, match="32 characters or more"):
        Sealer(short)
