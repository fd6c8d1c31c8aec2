"""Browsers cannot drive the server from another site: the Host check and the cross-site check.

Raw requests set the headers browsers send; a real headless chromium shows the same from a
page on another origin (a second loopback server), through a form, and through DNS
rebinding (chromium's resolver maps *.rebind.test to 127.0.0.1, as an attacker's DNS would).
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.helpers import Server, running_server, start_server, wait_until

STORES = ("memory",)
ALLOWED_ORIGIN = "https://dashboard.example"
PUBLIC = "pericles.rebind.test"


@pytest.fixture(scope="module")
def guarded() -> Iterator[Server]:
    srv = start_server("--public-host", PUBLIC, "--cors-origin", ALLOWED_ORIGIN)
    try:
        yield srv
    finally:
        srv.stop()


def _count(server: Server) -> int:
    with server.client() as client:
        return len(client.get("/payloads").json())


def _post(server: Server, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    with server.client() as client:
        body = json.dumps({"cmd": "true"})
        return client.post("/payloads", content=body, headers=headers, **kwargs)


# -- Host --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil", "0.0.0.0"]
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_unadmitted_host_is_refused_naming_the_flag(
    guarded: Server, host: str, method: str
) -> None:
    before = _count(guarded)
    with guarded.client() as client:
        response = client.request(method, "/payloads", headers={"Host": host}, json={"cmd": "true"})
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/host-not-admitted"
    assert "--public-host" in problem["detail"]
    assert _count(guarded) == before


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "LOCALHOST:1", "127.9.9.9", PUBLIC, f"{PUBLIC}:443"]
)
def test_loopback_names_the_public_host_and_the_address_are_admitted(
    guarded: Server, host: str
) -> None:
    with guarded.client() as client:
        assert client.get("/healthz", headers={"Host": host}).status_code == 200


def test_the_address_a_wildcard_server_is_reached_on_is_admitted() -> None:
    with running_server("--host", "0.0.0.0", "--insecure") as server, server.client() as client:
        assert client.get("/healthz", headers={"Host": "127.0.0.1:1"}).status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 403


# -- cross-site --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:1"},
        {"Origin": "garbage"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Referer": "https://evil.example/page.html"},
        {"Origin": f"{ALLOWED_ORIGIN}.evil.example"},
    ],
)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_cross_site_changes_are_refused(
    guarded: Server, headers: dict[str, str], content_type: str
) -> None:
    before = _count(guarded)
    response = _post(guarded, {**headers, "Content-Type": content_type})
    assert response.status_code == 403
    problem = response.json()
    assert problem["type"] == "/problems/cross-site-refused"
    assert "--cors-origin" in problem["detail"]
    assert _count(guarded) == before
    with guarded.client() as client:
        assert client.delete("/payloads/x", headers=headers).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, the CLI, the client
        {"Origin": ALLOWED_ORIGIN},
        {"Origin": ALLOWED_ORIGIN + "/", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
        {"Origin": f"https://{PUBLIC}", "Host": PUBLIC},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Referer": "http://127.0.0.1:{port}/"},
    ],
)
def test_own_listed_and_non_browser_changes_pass(guarded: Server, headers: dict[str, str]) -> None:
    headers = {k: v.format(port=guarded.port) for k, v in headers.items()}
    assert _post(guarded, headers).status_code == 201


def test_reads_from_other_sites_pass(guarded: Server) -> None:
    # A shared link or a navigation is a GET: it is never refused for its origin.
    with guarded.client() as client:
        headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        assert client.get("/payloads", headers=headers).status_code == 200


def test_seed_curl_form_post_still_creates(guarded: Server) -> None:
    result = subprocess.run(
        ["curl", "-s", "-d", '{"cmd": "true"}', f"{guarded.url}/payloads"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert json.loads(result.stdout)["status"] == "pending"


# -- a real browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def attacker_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A second loopback HTTP server: the other site whose pages attack ours."""
    root = tmp_path_factory.mktemp("site")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{site.server_address[1]}", root
    finally:
        site.shutdown()
        site.server_close()
        thread.join(10)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def _is_create(url: str, method: str) -> bool:
    return url.endswith("/payloads") and method == "POST"


def _refused_creates(server: Server) -> int:
    return server.log().count('"POST /payloads HTTP/1.1" 403')


def test_a_page_on_another_origin_cannot_post(
    server: Server, page: Page, attacker_site: tuple[str, Path]
) -> None:
    site, root = attacker_site
    before = _count(server)
    body = json.dumps({"cmd": "true"})
    (root / "fetch.html").write_text(
        f"<script>fetch({server.url + '/payloads'!r}, {{method: 'POST', body: {body!r}}})"
        ".catch(() => {{}})</script>"
    )
    refused = _refused_creates(server)
    page.goto(f"{site}/fetch.html")
    # The browser hides the answer from the page (no CORS headers); the server's log has it.
    wait_until(lambda: _refused_creates(server) > refused, what="the server to refuse the POST")
    assert _count(server) == before


def test_a_cross_site_form_cannot_post(
    server: Server, page: Page, attacker_site: tuple[str, Path]
) -> None:
    site, root = attacker_site
    before = _count(server)
    (root / "form.html").write_text(
        f'<form method="POST" action="{server.url}/payloads" enctype="text/plain">'
        """<input name='{"cmd": "true", "x": "' value='"}'></form>"""
        "<script>document.forms[0].submit()</script>"
    )
    with page.expect_response(lambda r: _is_create(r.url, r.request.method)) as answer:
        page.goto(f"{site}/form.html")
    assert answer.value.status == 403
    assert _count(server) == before


def test_the_servers_own_pages_can_post(server: Server, page: Page) -> None:
    page.goto(f"{server.url}/healthz")
    status = page.evaluate(
        "fetch('/payloads', {method: 'POST', body: JSON.stringify({cmd: 'true'})})"
        ".then(r => r.status)"
    )
    assert status == 201


def test_dns_rebinding_is_refused(server: Server, page: Page) -> None:
    # To the browser this is one origin, so it would let the page read every answer.
    response = page.goto(f"http://attacker.rebind.test:{server.port}/payloads")
    assert response is not None
    assert response.status == 403
    status = page.evaluate(
        "fetch('/payloads', {method: 'POST', body: JSON.stringify({cmd: 'true'})})"
        ".then(r => r.status)"
    )
    assert status == 403


def test_a_public_host_reached_by_name_works_in_a_browser(guarded: Server, page: Page) -> None:
    response = page.goto(f"http://{PUBLIC}:{guarded.port}/healthz")
    assert response is not None
    assert response.status == 200
    status = page.evaluate(
        "fetch('/payloads', {method: 'POST', body: JSON.stringify({cmd: 'true'})})"
        ".then(r => r.status)"
    )
    assert status == 201


@pytest.mark.parametrize(
    "headers",
    [
        b"Host: evil.example\r\nHost: 127.0.0.1\r\n",
        b"Host: 127.0.0.1\r\nHost: evil.example\r\n",
        b"Host: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\nOrigin: https://evil.example\r\n",
    ],
)
def test_repeated_headers_cannot_smuggle_a_name_or_an_origin(
    guarded: Server, headers: bytes
) -> None:
    request = b"POST /payloads HTTP/1.1\r\n" + headers
    request += b'Content-Length: 15\r\nConnection: close\r\n\r\n{"cmd": "true"}'
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 "), answer[:200]


def test_a_trailing_dot_names_the_same_host(guarded: Server) -> None:
    with guarded.client() as client:
        assert client.get("/healthz", headers={"Host": f"{PUBLIC}."}).status_code == 200
        assert client.get("/healthz", headers={"Host": "localhost.:1"}).status_code == 200
