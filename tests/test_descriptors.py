"""Out of descriptors: a payload that cannot get its pipes ends error:start, never pending."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import (
    is_terminal,
    release_all,
    start_server,
    wait_for_status,
    wait_until,
)

STORES = ("memory",)


def test_payloads_started_past_the_descriptor_limit_end_and_free_what_they_took(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # 128 descriptors in all: payloads holding their pipes use them up well before 80 run.
    server = start_server("--max-running", "0", wrap=["prlimit", "--nofile=128:128", "--"])
    try:
        with server.client() as client:
            body = {"cmd": "/bin/sh", "params": ["-c", f"read x < {gate}"], "stdin": "pipe"}
            ids = [client.post("/payloads", json=body).json()["id"] for _ in range(80)]

            def settled() -> list[dict[str, object]] | None:
                found = [client.get(f"/payloads/{i}").json() for i in ids]
                return found if all(r["status"] != "pending" for r in found) else None

            found = wait_until(settled, 20, "no payload left pending")
            failed = [r for r in found if str(r["status"]).startswith("error:start")]
            working = [r for r in found if r["status"] == "working"]
            assert failed, "the limit was never reached"
            assert len(failed) + len(working) == len(ids)
            assert all(
                r["status"] == "error:start('/bin/sh':Too many open files" for r in failed
            ), {r["status"] for r in failed}
            release_all(
                gate,
                lambda: all(
                    is_terminal(client.get(f"/payloads/{r['id']}").json()) for r in working
                ),
            )
            for r in working:
                assert wait_for_status(client, str(r["id"]))["status"] == "finished"
            # What the failed starts took was given back: a payload runs now.
            again = client.post("/payloads", json={"cmd": "/bin/echo", "params": ["ok"]})
            done = wait_for_status(client, again.json()["id"])
            assert done["status"] == "finished"
            assert client.get(f"/payloads/{done['id']}/output").content == b"ok\n"
            assert all(is_terminal(r) for r in client.get("/payloads").json())
    finally:
        assert server.stop() == 0
