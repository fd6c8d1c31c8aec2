"""Health, readiness, Prometheus metrics, JSON logs, and an OpenAPI document that is true."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Server, post, running_server, wait_for_status, wait_until


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["containment"] in ("cgroup", "session")


def test_metrics_move_as_payloads_run(client: httpx.Client) -> None:
    before = scrape(client)
    done = wait_for_status(client, post(client, "/bin/echo", "hello")["id"])
    failed = wait_for_status(client, post(client, "/no/such/thing")["id"])
    assert failed["status"].startswith("error:start(")
    client.get(f"/payloads/{done['id']}")
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pericles_payloads_created_total") == 2
    assert delta("pericles_payloads_ended_total", status="finished") == 1
    assert delta("pericles_payloads_ended_total", status="error") == 1
    assert delta("pericles_spawn_failures_total") == 1
    assert delta("pericles_output_bytes_total", stream="stdout") == len("hello\n")
    assert delta("pericles_payload_start_delay_seconds_count") == 1
    assert delta("pericles_payload_duration_seconds_count") == 1
    assert value(after, "pericles_payloads_running") >= 0
    assert value(after, "pericles_payloads_pending") >= 0
    route = "/payloads/{payload_id}"
    assert delta("pericles_http_requests_total", route=route, method="GET", code="200") >= 1
    assert delta("pericles_http_requests_total", route="/payloads", method="POST", code="201") == 2
    assert delta("pericles_http_request_duration_seconds_count", route=route) >= 1
    # Labels carry route templates, never ids.
    assert not any(done["id"] in str(labels) for _, labels in after)


def test_unmatched_paths_share_one_label(client: httpx.Client) -> None:
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    samples = scrape(client)
    assert (
        value(
            samples, "pericles_http_requests_total", route="<unmatched>", method="GET", code="404"
        )
        >= 2
    )
    assert not any("/no/such/path" in str(labels) for _, labels in samples)


def test_metrics_can_be_switched_off() -> None:
    with running_server("--no-metrics") as server, server.client() as client:
        assert client.get("/metrics").status_code == 404


def test_json_logs_parse_and_hold_no_secret() -> None:
    secret = "hunter2-do-not-log"
    with running_server("--log-format", "json") as server, server.client() as client:
        response = client.post(
            "/payloads",
            json={"cmd": "/bin/sh", "params": ["-c", "exit 3"], "env": {"PASSWORD": secret}},
        )
        assert response.status_code == 201, response.text
        wait_for_status(client, response.json()["id"])
        client.get("/payloads/nope")
    lines = [line for line in server.log().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in parsed)
    ended = [e for e in parsed if e.get("payload_id") == response.json()["id"]]
    assert [e["status"] for e in ended] == ["pending", "working", "finished"]
    assert ended[-1]["exit_code"] == 3
    assert ended[-1]["cmd"] == "/bin/sh"
    requests = [e for e in parsed if e["logger"] == "uvicorn.access"]
    assert {"method", "path", "status"} <= requests[0].keys()
    assert secret not in server.log()


def test_plain_log_lines_start_with_local_time_level_and_logger() -> None:
    with running_server() as server, server.client() as client:
        first = post(client, "/bin/true")
        wait_for_status(client, first["id"])
        second = post(client, "/bin/true")
        wait_for_status(client, second["id"])
    line = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ([A-Z]+) ([\w.]+): (.*)")
    parsed = [line.fullmatch(text) for text in server.log().splitlines() if text.strip()]
    assert all(parsed), server.log()
    now = datetime.now()
    for match in parsed:
        assert match is not None
        stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S")
        assert abs((now - stamp).total_seconds()) < 120, match[0]
    ours = [m[5] for m in parsed if m is not None and m[4] == "pericles.service"]
    for record in (first, second):
        said = [text.split()[2] for text in ours if text.startswith(f"payload {record['id']} ")]
        assert said == ["pending", "working", "finished"], ours
    # Lines wait for the end of the loop's turn: the last ones, logged as the loop stops,
    # are written all the same.
    assert ours[-1] == "shutdown: every payload has ended", ours


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with the document's components attached, so $refs resolve."""
    return {**schema, "components": document.get("components", {})}


def test_openapi_document_is_valid_and_live_answers_match_it(
    server: Server, client: httpx.Client
) -> None:
    document = client.get("/openapi.json").json()
    validate(document)
    paths = document["paths"]
    for path in (
        "/payloads",
        "/payloads/{payload_id}",
        "/payloads/{payload_id}/output",
        "/payloads/{payload_id}/events",
        "/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    create_op = paths["/payloads"]["post"]
    assert create_op["requestBody"]["content"]["application/json"]["example"] == {
        "cmd": "/bin/sleep",
        "params": ["30"],
    }
    record_schema = create_op["responses"]["201"]["content"]["application/json"]["schema"]
    problem_schema = create_op["responses"]["422"]["content"]["application/problem+json"]["schema"]

    created = client.post("/payloads", json={"cmd": "/bin/true"})
    jsonschema.validate(created.json(), _resolve(document, record_schema))
    done = wait_for_status(client, created.json()["id"])
    jsonschema.validate(done, _resolve(document, record_schema))
    listed = paths["/payloads"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(client.get("/payloads").json(), _resolve(document, listed))
    refused = client.post("/payloads", json={"cmd": 1})
    assert refused.status_code == 422
    jsonschema.validate(refused.json(), _resolve(document, problem_schema))
    missing = client.get("/payloads/0d111286d6fb4f7ebd7464082bada101")
    jsonschema.validate(missing.json(), _resolve(document, problem_schema))


def test_readyz_reports_a_broken_store_without_naming_it(tmp_path: Path) -> None:
    db = tmp_path / "pericles.db"
    with running_server("--store", f"sqlite:///{db}") as server, server.client() as client:
        assert client.get("/readyz").status_code == 200
        # Writes would go on into a file no restart opens: not ready, and says why.
        db.rename(tmp_path / "moved-away.db")
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        # Anyone may ask /readyz: the detail names no path, the log says what is wrong.
        assert response.json()["detail"] == "store unavailable"
        assert str(tmp_path) not in response.text
        # The log is read by a thread: wait for the line rather than race it.
        wait_until(lambda: "removed or replaced" in server.log(), 10, "the store's log line")
        assert client.get("/healthz").status_code == 200
