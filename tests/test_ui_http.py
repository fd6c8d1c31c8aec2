"""The dashboard's files over HTTP: headers, caching, no inline code; and the API it uses."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from pericles.ui.routes import DOCS, STATIC
from tests.helpers import post, running_server, wait_for_status

PAGES = ("/", "/docs")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


@pytest.mark.parametrize("path", PAGES)
def test_pages_have_a_strict_content_security_policy(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("page", [STATIC / "index.html", DOCS / "docs.html"])
def test_pages_hold_no_inline_script_or_style(page: Path) -> None:
    for tag, attrs in _tags(page.read_text()):
        assert tag != "style"
        assert "style" not in attrs
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "script":
            assert attrs.get("src"), "a script without src is inline"


def test_scripts_never_parse_html_or_eval() -> None:
    """Text from the server only ever goes into the page as text nodes."""
    for script in (STATIC / "js").glob("*.js"):
        code = script.read_text()
        for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function"):
            assert risky not in code, (script.name, risky)


@pytest.mark.parametrize(
    "path", ["/", "/ui/style.css", "/ui/js/app.js", "/docs", "/docs/assets/swagger-ui-bundle.js"]
)
def test_files_carry_an_etag_and_revalidate_to_304(client: httpx.Client, path: str) -> None:
    first = client.get(path)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-cache"
    etag = first.headers["etag"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_every_file_the_dashboard_names_is_served(client: httpx.Client) -> None:
    names = {a.get("src") or a.get("href") for _, a in _tags(client.get("/").text)}
    local = {n for n in names if n and n.startswith("/ui/")}
    # Every module is preloaded by the page, so none waits for the one importing it.
    assert {f"/ui/js/{m.name}" for m in (STATIC / "js").glob("*.js")} <= local
    for script in (STATIC / "js").glob("*.js"):
        for module in re.findall(r'from "\./([\w-]+\.js)"', script.read_text()):
            local.add(f"/ui/js/{module}")
    for path in local:
        response = client.get(path)
        assert response.status_code == 200, path
    assert client.get("/ui/js/app.js").headers["content-type"].startswith("text/javascript")


def test_no_ui_serves_no_dashboard_but_keeps_the_docs() -> None:
    with running_server("--no-ui") as server, server.client() as client:
        assert client.get("/").headers["content-type"] == "application/json"  # the index
        assert client.get("/ui/js/app.js").status_code == 404
        assert client.get("/docs").status_code == 200
        assert client.get("/payloads").status_code == 200


def test_search_finds_payloads_by_command_line(client: httpx.Client) -> None:
    wanted = post(client, "/bin/echo", "Needle-Twelve")
    post(client, "/bin/echo", "haystack")
    found = client.get("/payloads", params={"q": "needle-twelve"}).json()
    assert [r["id"] for r in found] == [wanted["id"]]
    # Matched on cmd and params joined by spaces, as the list shows them.
    assert (
        client.get("/payloads", params={"q": "echo needle-TWELVE"}).json()[0]["id"]
        == (wanted["id"])
    )
    assert client.get("/payloads", params={"q": "no such text"}).json() == []


def test_counts_by_status(client: httpx.Client) -> None:
    record = post(client, "/bin/sh", "-c", "exit 0")
    wait_for_status(client, record["id"])
    records = client.get("/payloads").json()
    counts = client.get("/payloads/counts").json()
    assert counts["total"] == len(records)
    assert sum(counts["by_status"].values()) == len(records)
    finished = sum(1 for r in records if r["status"] == "finished")
    assert counts["by_status"]["finished"] == finished >= 1
