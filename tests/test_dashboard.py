"""The dashboard in a real browser: headless chromium against a real handler-serve.

Every wait is on a condition (Playwright's `expect` retries until its timeout). Payloads
that must stay in a state wait on a FIFO until the test lets them go on.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.helpers import (
    Server,
    is_terminal,
    post,
    post_many,
    release,
    running_server,
    start_server,
    wait_for_status,
    wait_until,
)

# One store is enough here: what the page shows comes through the API, tested per store.
STORES = ("memory",)

RUN_SECRET = "run-secret-0123456789abcdef"
READ_SECRET = "read-secret-0123456789abcdef"
TOKENS_TOML = f"""
[[token]]
name = "ops"
secret = "{RUN_SECRET}"
scope = "run"

[[token]]
name = "viewer"
secret = "{READ_SECRET}"
scope = "read"
"""
#: Where `make screenshots` asks the tests to leave the README's pictures.
SCREENSHOTS_ENV = "PERICLES_SCREENSHOTS"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One payload runs at a time, so a second one shows as pending in the queue."""
    srv = start_server("--max-running", "1")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _nothing_left_running(client: httpx.Client) -> Iterator[None]:
    yield
    for record in client.get("/payloads").json():
        if not is_terminal(record) and not record["status"].startswith("error"):
            client.post(f"/payloads/{record['id']}/cancel")


class Watched:
    """A page, with what it asked of other hosts and what the CSP refused."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.foreign: list[str] = []
        self.csp: list[str] = []
        self.errors: list[str] = []

        def route(r: Route) -> None:
            if r.request.url.startswith(origin):
                r.continue_()
            else:
                self.foreign.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        self.page = context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda m: self.csp.append(m.text) if "Content Security Policy" in m.text else None,
        )

    def check(self) -> None:
        assert self.foreign == [], "the page loaded something from elsewhere"
        assert self.csp == [], "the Content-Security-Policy refused something"
        assert self.errors == [], "the page threw"


@contextlib.contextmanager
def watched(browser: Browser, server: Server, **options: Any) -> Iterator[Watched]:
    context = browser.new_context(base_url=server.url, **options)
    try:
        view = Watched(context, server.url)
        yield view
        view.check()
    finally:
        context.close()


@pytest.fixture
def ui(browser: Browser, server: Server) -> Iterator[Watched]:
    with watched(browser, server, viewport={"width": 1200, "height": 800}) as view:
        yield view


def gate(tmp_path: Path, name: str = "gate") -> Path:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    return fifo


def badge(page: Page) -> Any:
    return page.locator(".detail-head .badge")


def test_create_through_the_form_and_watch_it_go_live(
    ui: Watched, client: httpx.Client, tmp_path: Path
) -> None:
    first, second = gate(tmp_path, "first"), gate(tmp_path, "second")
    blocker = post(client, "/bin/sh", "-c", 'read x < "$0"', str(first))
    wait_for_status(client, blocker["id"], "working")
    page = ui.page
    page.goto("/#/new")
    page.get_by_label("Command", exact=True).fill("/bin/sh")
    page.get_by_label("Parameters").fill(f'-c\nread x < "$0"; echo done\n{second}')
    page.get_by_label("Labels").fill("team=web")
    # The policy's answer is shown before anything is submitted.
    expect(page.locator(".verdict")).to_contain_text("allowed")
    assert client.get("/payloads").json()[-1]["id"] == blocker["id"]
    page.get_by_role("button", name="Create").click()
    expect(page).to_have_url(re.compile(r"#/payloads/[0-9a-f]{32}$"))
    page.evaluate("window.notReloaded = true")
    expect(badge(page)).to_have_attribute("data-state", "pending")
    expect(badge(page)).to_contain_text("in queue")
    release(first)
    expect(badge(page)).to_have_attribute("data-state", "working")
    release(second)
    expect(badge(page)).to_have_attribute("data-state", "finished")
    expect(badge(page)).to_contain_text("exit 0")
    expect(page.locator(".term")).to_contain_text("done")
    assert page.evaluate("window.notReloaded") is True
    page.get_by_role("link", name="All payloads").click()
    row = page.locator("tbody tr").first
    expect(row).to_contain_text("team=web")
    expect(row.locator(".badge")).to_have_attribute("data-state", "finished")


def test_the_list_follows_the_event_feed_and_filters(
    ui: Watched, client: httpx.Client, tmp_path: Path
) -> None:
    page = ui.page
    page.goto("/")
    expect(page.get_by_role("heading", name="Payloads")).to_be_visible()
    fifo = gate(tmp_path)
    record = post(client, "/bin/sh", "-c", 'read x < "$0"', str(fifo), labels={"kind": "gated"})
    row = page.locator(f'tr[data-id="{record["id"]}"]')
    expect(row.locator(".badge")).to_have_attribute("data-state", "working")
    expect(row.locator(".clock")).to_be_visible()
    expect(page.locator("#count-running")).to_have_text("1")
    release(fifo)
    expect(row.locator(".badge")).to_have_attribute("data-state", "finished")
    post(client, "/bin/echo", "needle-in-haystack")
    page.get_by_label("Search command").fill("needle")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text("needle-in-haystack")
    page.get_by_label("Search command").fill("")
    page.get_by_label("Label").fill("kind=gated")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_have_attribute("data-id", record["id"])


def test_a_payload_the_feed_tells_of_while_the_list_loads_stays_listed(
    ui: Watched, client: httpx.Client, tmp_path: Path
) -> None:
    """The list's answer was made before a payload existed, and arrives after the feed told
    of it: the row stays, instead of vanishing until the payload's next transition."""
    page = ui.page
    held: list[tuple[Route, Any]] = []
    holding = [True]

    def hold(route: Route) -> None:
        if not holding[0]:
            route.continue_()
            return
        held.append((route, route.fetch()))  # the server's answer now, handed on later

    page.route(re.compile(r"/payloads\?"), hold)
    page.goto("/")
    # The first load, and the one made once the feed is open: both answered before the POST.
    wait_until(lambda: page.evaluate("1") and len(held) >= 2, what="the list's loads")
    fifo = gate(tmp_path)
    record = post(client, "/bin/sh", "-c", 'read x < "$0"', str(fifo))
    row = page.locator(f'tr[data-id="{record["id"]}"]')
    expect(row.locator(".badge")).to_have_attribute("data-state", "working")
    holding[0] = False
    for route, answer in held:
        route.fulfill(response=answer)
    expect(page.locator(".page-info")).to_contain_text("Page 1")
    expect(row.locator(".badge")).to_have_attribute("data-state", "working")
    release(fifo)
    expect(row.locator(".badge")).to_have_attribute("data-state", "finished")


def test_live_output_arrives_in_order_with_ansi_colours(
    ui: Watched, client: httpx.Client, tmp_path: Path
) -> None:
    fifo = gate(tmp_path)
    script = (
        r'for i in 1 2 3; do printf "\033[32mline %s\033[0m\n" $i; done; echo oops >&2; '
        r'seq -f "filler %g" 1 200; read x < "$0"; '
        r'for i in 4 5 6; do printf "\033[1;31mline %s\033[0m\n" $i; done; seq 1 200'
    )
    record = post(client, "/bin/sh", "-c", script, str(fifo))
    page = ui.page
    page.goto(f"/#/payloads/{record['id']}")
    term = page.locator(".term")
    # Output shows while the payload still runs: it is held on the FIFO.
    expect(term.locator("span.fg-2")).to_have_count(3)
    expect(term.locator(".out-stderr")).to_have_text("oops\n")
    expect(badge(page)).to_have_attribute("data-state", "working")
    expect(term).to_contain_text("filler 200")
    # The pane follows the tail, until the reader scrolls up: then it stays where it is.
    expect(term).to_have_js_property(
        "scrollTop", term.evaluate("el => el.scrollHeight - el.clientHeight")
    )
    term.evaluate("el => el.scrollTo(0, 0)")
    release(fifo)
    expect(badge(page)).to_have_attribute("data-state", "finished")
    expect(term.locator("span.fg-1.a-bold")).to_have_count(3)
    expect(term).to_contain_text("\n200\n")
    assert term.evaluate("el => el.scrollTop") == 0
    text = term.inner_text()
    assert [int(n) for n in re.findall(r"line (\d)", text)] == [1, 2, 3, 4, 5, 6]
    assert "\x1b" not in text
    assert "[32m" not in text
    page.get_by_role("checkbox", name="stderr").uncheck()
    expect(term.locator(".out-stderr")).to_be_hidden()
    expect(page.locator(".usage")).to_contain_text("cpu user")
    with page.expect_download() as saved:
        page.get_by_role("button", name="Download stderr").click()
    assert saved.value.suggested_filename == f"{record['id']}.stderr.txt"
    assert Path(saved.value.path()).read_text() == "oops\n"


def test_stdin_run_again_and_delete(ui: Watched, client: httpx.Client) -> None:
    script = 'read line; echo "got:$line"'
    record = post(client, "/bin/sh", "-c", script, stdin="pipe", labels={"t": "stdin"})
    page = ui.page
    page.goto(f"/#/payloads/{record['id']}")
    expect(badge(page)).to_have_attribute("data-state", "working")
    page.get_by_label("Send to stdin").fill("hello")
    page.get_by_label("close stdin after").check()
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator(".term")).to_have_text("got:hello\n")
    expect(badge(page)).to_have_attribute("data-state", "finished")
    page.get_by_role("button", name="Run again").click()
    expect(page).not_to_have_url(re.compile(record["id"]))
    again_id = page.url.rsplit("/", 1)[-1]
    again = client.get(f"/payloads/{again_id}").json()
    assert (again["cmd"], again["params"], again["stdin"], again["labels"]) == (
        "/bin/sh",
        ["-c", script],
        "pipe",
        {"t": "stdin"},
    )
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"#/$"))
    assert client.get(f"/payloads/{again_id}").status_code == 404


def test_a_dropped_connection_resumes_with_last_event_id(ui: Watched, client: httpx.Client) -> None:
    """The page's event reader, cut off mid-stream, goes on where it was: no gap, no repeat."""
    record = post(client, "/bin/sh", "-c", "seq 1 3000; seq 1 3000 >&2")
    wait_for_status(client, record["id"])
    page = ui.page
    page.goto("/")
    result = page.evaluate(CUT_AND_RESUME, record["id"])
    expected = "".join(f"{i}\n" for i in range(1, 3001))
    assert result["text"] == {"stdout": expected, "stderr": expected}
    assert result["calls"] == 2
    assert result["resumedFrom"] is not None
    assert result["states"] == ["open", "reconnecting", "open", "ended"]
    # Cut in the middle: events came over both connections.
    assert result["events"][1] >= 1
    assert result["events"][2] >= 1


# Follows a payload's events with the dashboard's own reader, through a fetch whose first
# response breaks a few bytes into the second event, as a dropped connection would.
CUT_AND_RESUME = """async (id) => {
  const { follow } = await import("/ui/js/sse.js");
  const realFetch = window.fetch;
  let calls = 0;
  let resumedFrom;
  window.fetch = async (url, init) => {
    // Only this reader's requests: the dashboard behind it fetches too.
    if (url !== `/payloads/${id}/events`) return realFetch(url, init);
    calls += 1;
    const response = await realFetch(url, init);
    if (calls > 1) {
      resumedFrom = init.headers["Last-Event-ID"] ?? null;
      return response;
    }
    // Hands the body on 16 bytes at a time, and fails 10 bytes past the first event's end,
    // once the reader has handled that event: an error discards chunks still queued in the
    // pipe, so failing any earlier could take the first event with it.
    const reader = response.body.getReader();
    let pending = new Uint8Array(0);
    let seen = "";
    const decoder = new TextDecoder();
    const body = new ReadableStream({
      async pull(controller) {
        const end = seen.indexOf("\\n\\n");
        if (end >= 0 && seen.length >= end + 12 && events[1] >= 1) {
          controller.error(new TypeError("network error"));
          return;
        }
        if (!pending.length) {
          const { value, done } = await reader.read();
          if (done) { controller.close(); return; }
          pending = value;
        }
        const part = pending.slice(0, 16);
        pending = pending.slice(16);
        seen += decoder.decode(part, { stream: true });
        controller.enqueue(part);
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
  const text = { stdout: "", stderr: "" };
  const states = [];
  const events = [0, 0, 0];
  const controller = new AbortController();
  await follow(`/payloads/${id}/events`, {
    signal: controller.signal,
    resume: () => false,
    onState: (state) => states.push(state),
    onEvent: (type, data) => {
      events[calls] += 1;
      if (type === "output") {
        const event = JSON.parse(data);
        text[event.stream] += event.text;
      }
    },
  });
  window.fetch = realFetch;
  return { text, calls, resumedFrom, states, events };
}"""


def test_signal_stop_cont_and_cancel(ui: Watched, client: httpx.Client) -> None:
    record = post(client, "/bin/sleep", "300")
    page = ui.page
    page.goto(f"/#/payloads/{record['id']}")
    expect(badge(page)).to_have_attribute("data-state", "working")
    page.get_by_label("Signal").select_option("SIGSTOP")
    page.get_by_role("button", name="Send signal").click()
    expect(badge(page)).to_have_attribute("data-state", "paused")
    page.get_by_label("Signal").select_option("SIGCONT")
    page.get_by_role("button", name="Send signal").click()
    expect(badge(page)).to_have_attribute("data-state", "working")
    page.get_by_role("button", name="Cancel", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Cancel this payload?")
    page.keyboard.press("Escape")  # the keyboard way out of a modal: nothing happens
    expect(dialog).to_be_hidden()
    assert client.get(f"/payloads/{record['id']}").json()["status"] == "working"
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel payload").click()
    expect(badge(page)).to_have_attribute("data-state", "cancelled")
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)


def test_a_large_output_shows_the_dropped_marker_and_stays_responsive(
    ui: Watched, client: httpx.Client
) -> None:
    # 3 MiB on stdout: the server keeps the first and last 512 KiB (--max-output 1 MiB).
    record = post(client, "/bin/sh", "-c", "head -c 3145728 /dev/zero | tr '\\0' x; echo end")
    wait_for_status(client, record["id"], "finished", timeout=30)
    page = ui.page
    page.goto(f"/#/payloads/{record['id']}")
    marker = page.locator(".term .dropped")
    expect(marker).to_contain_text("of stdout dropped")
    expect(marker).to_contain_text(f"{3 * 1024 * 1024 + 4 - 1024 * 1024} bytes")
    expect(page.locator(".term")).to_contain_text("xend")
    # Still answering input: a toggle hides the stream at once, the pane scrolls.
    page.get_by_role("checkbox", name="stdout").uncheck()
    expect(page.locator(".term")).to_have_class(re.compile("hide-stdout"))
    page.get_by_role("checkbox", name="stdout").check()
    page.locator(".term").evaluate("el => { el.scrollTop = 0; }")
    assert page.locator(".term").evaluate("el => el.scrollTop") == 0


def test_a_read_token_sees_no_controls(browser: Browser, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS_TOML)
    run_auth = {"Authorization": f"Bearer {RUN_SECRET}"}
    with running_server("--tokens-file", str(tokens), headers=run_auth) as secured:
        with secured.client() as client:
            record = post(client, "/bin/sleep", "300")
        with watched(browser, secured) as view:
            page = view.page
            page.goto(f"/#/payloads/{record['id']}")
            dialog = page.get_by_role("dialog", name="Token required")
            expect(dialog).to_be_visible()
            page.get_by_label("Token", exact=True).fill("not-a-token-at-all-here")
            page.get_by_role("button", name="Use token").click()
            expect(dialog).to_contain_text("did not accept")
            page.get_by_label("Token", exact=True).fill(READ_SECRET)
            page.get_by_role("button", name="Use token").click()
            expect(dialog).to_be_hidden()
            expect(badge(page)).to_have_attribute("data-state", "working")
            expect(page.locator("#scope")).to_have_text("read-only token")
            for name in ("Cancel", "Delete", "Run again", "Send signal", "New payload"):
                expect(page.get_by_role("button", name=name)).to_have_count(0)
                expect(page.get_by_role("link", name=name)).to_have_count(0)
            # The token lives in this tab only.
            assert page.evaluate("sessionStorage.getItem('pericles.token')") == READ_SECRET
            assert page.evaluate("localStorage.length") == 0
            assert page.context.cookies() == []
        with watched(browser, secured) as view:
            page = view.page
            page.goto(f"/#/payloads/{record['id']}")
            page.get_by_label("Token", exact=True).fill(RUN_SECRET)
            page.get_by_role("button", name="Use token").click()
            expect(page.locator("#scope")).to_have_text("run token")
            page.get_by_role("button", name="Cancel", exact=True).click()
            page.get_by_role("dialog").get_by_role("button", name="Cancel payload").click()
            expect(badge(page)).to_have_attribute("data-state", "cancelled")


def test_ten_thousand_records_page_fast_and_scroll(browser: Browser) -> None:
    with running_server("--max-running", "1") as crowded, crowded.client() as client:
        post(client, "/bin/sleep", "300")  # holds the only slot: the rest wait, unstarted
        # In a thread of its own: post_many runs an event loop, Playwright has one here.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            created = pool.submit(post_many, crowded.port, b'{"cmd": "/bin/true"}', 9_999)
            assert created.result() == 9_999
        with watched(browser, crowded, viewport={"width": 1200, "height": 800}) as view:
            page = view.page
            page.goto("/")
            expect(page.locator("tbody tr")).to_have_count(50)
            first_rows_ms = page.evaluate(
                "performance.getEntriesByName('pericles:list-shown')[0].startTime"
            )
            print(f"\n10,000 records: first rows shown {first_rows_ms:.0f} ms after navigation")
            expect(page.locator("tbody tr").first.locator(".badge")).to_contain_text("#9999")
            expect(page.locator("#count-pending")).to_have_text("9999")
            first_id = page.locator("tbody tr").first.get_attribute("data-id")
            page.mouse.wheel(0, 20_000)
            older = page.get_by_role("button", name="Older")
            expect(older).to_be_in_viewport()
            older.click()
            expect(page.locator(".page-info")).to_contain_text("Page 2")
            expect(page.locator("tbody tr")).to_have_count(50)
            assert page.locator("tbody tr").first.get_attribute("data-id") != first_id
            page.get_by_role("button", name="Newer").click()
            expect(page.locator("tbody tr").first).to_have_attribute("data-id", first_id or "")


def test_no_critical_accessibility_violations_in_light_dark_and_phone_width(
    browser: Browser, server: Server, client: httpx.Client
) -> None:
    """axe-core (from axe-playwright-python) finds nothing critical on any view."""
    record = post(client, "/bin/sh", "-c", r'printf "\033[33mwarn\033[0m ok\n"; echo e >&2')
    wait_for_status(client, record["id"])
    axe = Axe()
    for options in (
        {"viewport": {"width": 1200, "height": 800}, "color_scheme": "light"},
        {"viewport": {"width": 375, "height": 740}, "color_scheme": "dark", "is_mobile": True},
    ):
        with watched(browser, server, **options) as view:
            page = view.page
            for path, ready in (
                ("/", "tbody tr"),
                (f"/#/payloads/{record['id']}", ".usage"),
                ("/#/new", "form.create"),
            ):
                page.goto(path)
                expect(page.locator(ready).first).to_be_visible()
                # A missing value shows as nothing, never as the word for it.
                expect(page.locator("body")).not_to_contain_text(re.compile(r"null|undefined"))
                results = axe.run(page)
                critical = [
                    (v["id"], v["help"])
                    for v in results.response["violations"]
                    if v["impact"] == "critical"
                ]
                assert critical == [], (path, options)
                # Nothing is wider than the screen: no sideways scrolling at phone width.
                assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")


def test_screenshots(ui: Watched, client: httpx.Client, tmp_path: Path) -> None:
    """The list and a detail page as pictures: the README shows them (`make screenshots`)."""
    out = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    for cmd, *params in (["/bin/echo", "hello"], ["/bin/sh", "-c", "exit 3"], ["/bin/false"]):
        post(client, cmd, *params, labels={"team": "web"})
    post(client, "/nonexistent/tool")
    (tmp_path / "build.sh").write_text(
        'printf "\\033[1mBuilding\\033[0m pericles\\n"\n'
        "for part in api ui store; do\n"
        '  printf "  \\033[32m\u2714\\033[0m %s\\n" "$part"\n'
        "done\n"
        'printf "\\033[33mwarning:\\033[0m 1 deprecated option\\n" >&2\n'
        'printf "\\033[36mdone\\033[0m in 0.4 s\\n"\n'
    )
    shown = post(client, "/bin/sh", "build.sh", cwd=str(tmp_path), labels={"job": "build"})
    wait_for_status(client, shown["id"])
    post(client, "/bin/sleep", "300", labels={"job": "soak"})
    page = ui.page
    page.goto("/")
    expect(page.locator("tbody tr")).to_have_count(len(client.get("/payloads").json()))
    expect(page.locator("tbody tr").first.locator(".badge")).to_have_attribute(
        "data-state", "working"
    )
    page.screenshot(path=out / "dashboard-list.png")
    page.goto(f"/#/payloads/{shown['id']}")
    expect(page.locator(".usage")).to_be_visible()
    page.screenshot(path=out / "dashboard-detail.png")
    for name in ("dashboard-list.png", "dashboard-detail.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")


def test_the_api_docs_work_offline_under_the_same_policy(ui: Watched) -> None:
    """Swagger UI comes from this server (fastapi-offline's files), CSP and all."""
    page = ui.page
    page.goto("/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/payloads/counts")).to_have_count(1)
