// The list: newest first, a page at a time from the server, kept live by the event feed.
import { json, request } from "./api.js";
import { announce, h } from "./dom.js";
import {
  STATES, commandLine, isEnded, labelChips, runTime, stateOf, statusBadge, timeCell,
} from "./format.js";

const PAGE_SIZE = 50;

/** Filters survive a visit to a detail page and back. */
const filters = { q: "", status: "", label: "" };

function query(after) {
  const params = new URLSearchParams({ order: "desc", limit: String(PAGE_SIZE) });
  if (filters.q) params.set("q", filters.q);
  if (filters.status) params.set("status", filters.status);
  // A label filter counts once it reads key=value; half-typed, it filters nothing yet.
  if (/^[^=]+=/.test(filters.label)) params.set("label", filters.label);
  if (after) params.set("after", after);
  return `/payloads?${params}`;
}

/** Does `record` belong in the list as filtered now? (The server's rules, for live rows.) */
function matches(record) {
  if (filters.status && stateOf(record) !== filters.status) return false;
  if (filters.q && !commandLine(record).toLowerCase().includes(filters.q.toLowerCase())) {
    return false;
  }
  if (/^[^=]+=/.test(filters.label)) {
    const [key, ...rest] = filters.label.split("=");
    if ((record.labels || {})[key] !== rest.join("=")) return false;
  }
  return true;
}

/** How far along a record is: payloads only move forward through these. */
function progress(record) {
  if (isEnded(record)) return 2;
  return record.started_at ? 1 : 0;
}

function row(record) {
  return h(
    "tr",
    { dataset: { id: record.id } },
    h("td", { class: "c-status" }, statusBadge(record)),
    h(
      "td",
      { class: "c-cmd" },
      h("a", { href: `#/payloads/${record.id}`, class: "cmd" }, commandLine(record)),
    ),
    h("td", { class: "c-labels" }, labelChips(record.labels)),
    h("td", { class: "c-by" }, record.created_by || ""),
    h("td", { class: "c-started" }, timeCell(record.started_at)),
    h("td", { class: "c-duration" }, runTime(record)),
  );
}

function filterForm(onChange) {
  let timer = null;
  const changed = (event) => {
    filters[event.target.name] = event.target.value.trim();
    clearTimeout(timer);
    timer = setTimeout(onChange, event.target.type === "search" ? 250 : 0);
  };
  return h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter payloads", onsubmit: (e) => e.preventDefault() },
    h(
      "label", {}, "Search command",
      h("input", { type: "search", name: "q", value: filters.q, oninput: changed }),
    ),
    h(
      "label", {}, "Status",
      h(
        "select", { name: "status", onchange: changed },
        h("option", { value: "" }, "all"),
        STATES.map((s) => h("option", { value: s, selected: filters.status === s }, s)),
      ),
    ),
    h(
      "label", {}, "Label",
      h("input", {
        type: "search", name: "label", value: filters.label, placeholder: "key=value",
        pattern: "[^=]+=.*", oninput: changed,
      }),
    ),
  );
}

export function listView(main, { feed }) {
  const controller = new AbortController();
  const cursors = [null]; // `after` of each page seen; the last is this page's
  let more = false;
  let newest = null; // created_at of the newest row on the first page
  const tbody = h("tbody");
  const summary = h("p", { class: "page-info", "aria-live": "polite" });
  const newer = h("button", { type: "button", onclick: () => turn(-1) }, "\u2190 Newer");
  const older = h("button", { type: "button", onclick: () => turn(1) }, "Older \u2192");

  let loads = 0; // only the latest load may fill the table
  let heard = null; // records the feed brought while a load was on its way, else null

  async function load() {
    const after = cursors[cursors.length - 1];
    const mine = ++loads;
    heard = new Map();
    try {
      const response = await request(query(after), { signal: controller.signal });
      const records = await response.json();
      if (mine !== loads) return;
      more = /rel="next"/.test(response.headers.get("Link") || "");
      // The answer may be older than a transition the feed already told: keep the later.
      const latest = records.map((r) => {
        const told = heard.get(r.id);
        return told && progress(told) >= progress(r) ? told : r;
      });
      // A payload the feed told of after the server answered is not in the answer: on
      // page 1 it goes on top, or it would vanish until the next transition.
      if (cursors.length === 1) {
        const listed = new Set(records.map((r) => r.id));
        const top = records.length ? records[0].created_at : "";
        const fresh = [...heard.values()]
          .filter((r) => !listed.has(r.id) && r.created_at >= top && matches(r))
          .sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
        latest.unshift(...fresh);
        if (latest.length > PAGE_SIZE) {
          latest.length = PAGE_SIZE;
          more = true;
        }
      }
      tbody.replaceChildren(...latest.map(row));
      newest = cursors.length === 1 && latest.length ? latest[0].created_at : null;
      const page = cursors.length;
      summary.textContent = latest.length
        ? `Page ${page}: ${latest.length} payload${latest.length === 1 ? "" : "s"}`
        : "No payloads match.";
      newer.disabled = page === 1;
      older.disabled = !more;
      // For whoever measures: when rows were first on screen, in the Performance API.
      if (!performance.getEntriesByName("pericles:list-shown").length) {
        performance.mark("pericles:list-shown");
      }
    } catch (error) {
      if (!controller.signal.aborted) announce(`Could not list payloads: ${error.message}`, "error");
    } finally {
      if (mine === loads) heard = null;
    }
  }

  function turn(step) {
    if (step > 0 && more) cursors.push(tbody.lastElementChild?.dataset.id ?? null);
    if (step < 0 && cursors.length > 1) cursors.pop();
    load();
    main.querySelector("h1").focus();
  }

  function refilter() {
    cursors.splice(1);
    load();
  }

  // A transition changes its row in place; a new payload that fits goes on top of page 1.
  function onStatus(event) {
    const record = event.detail;
    heard?.set(record.id, record);
    const existing = tbody.querySelector(`tr[data-id="${record.id}"]`);
    if (existing) {
      existing.replaceWith(row(record));
      return;
    }
    const fresh = !newest || record.created_at >= newest;
    if (cursors.length !== 1 || !fresh || !matches(record)) return;
    tbody.prepend(row(record));
    newest = record.created_at;
    if (tbody.children.length > PAGE_SIZE) {
      tbody.lastElementChild.remove();
      more = true;
      older.disabled = false;
    }
    if (summary.textContent === "No payloads match.") summary.textContent = "Page 1";
  }
  feed.addEventListener("status", onStatus, { signal: controller.signal });
  feed.addEventListener("synced", () => load(), { signal: controller.signal });

  main.replaceChildren(
    h("h1", { tabindex: "-1" }, "Payloads"),
    filterForm(refilter),
    h(
      "div", { class: "table-wrap" },
      h(
        "table", { class: "payloads" },
        h("caption", { class: "sr-only" }, "Payloads, newest first"),
        h(
          "thead", {},
          h(
            "tr", {},
            ["Status", "Command", "Labels", "Created by", "Started", "Duration"].map((t) =>
              h("th", { scope: "col" }, t)),
          ),
        ),
        tbody,
      ),
    ),
    h("nav", { class: "pager", "aria-label": "Pages" }, newer, summary, older),
  );
  load();
  return { destroy: () => controller.abort() };
}
