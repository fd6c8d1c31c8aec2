// How records read: status badges with icon and colour, times, durations, sizes.
import { h } from "./dom.js";

export const STATES = [
  "pending", "working", "paused", "finished", "error", "cancelled", "timeout", "lost",
];
const ICONS = {
  pending: "\u25F7", working: "\u25B6", paused: "\u23F8", finished: "\u2714",
  failed: "\u2716", error: "\u26A0", cancelled: "\u2298", timeout: "\u231B", lost: "?",
};
const ENDED = new Set(["finished", "error", "cancelled", "timeout", "lost"]);

export function stateOf(record) {
  return record.status.startsWith("error:") ? "error" : record.status;
}

export function isEnded(record) {
  return ENDED.has(stateOf(record));
}

export function isActive(record) {
  return !isEnded(record);
}

export function commandLine(record) {
  return [record.cmd, ...(record.params || [])].map(quote).join(" ");
}

function quote(word) {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

/** What the status says in words, beyond its name. */
function statusDetail(record) {
  const state = stateOf(record);
  if (state === "pending") {
    const parts = [];
    if (record.queue_position != null) parts.push(`#${record.queue_position} in queue`);
    if (record.pending_reason) parts.push(record.pending_reason);
    return parts.join(", ");
  }
  if (state === "finished") {
    if (record.signal) return record.signal;
    return record.exit_code != null ? `exit ${record.exit_code}` : "";
  }
  if (state === "error") {
    // error:start('<cmd>':<reason>  ->  "start: <reason>" (the command is in its own column)
    const reason = record.status.slice(record.status.lastIndexOf("':") + 2);
    return `start: ${reason}`;
  }
  if (state === "timeout") return record.timeout_reason || "";
  return "";
}

function failed(record) {
  return stateOf(record) === "finished" && (record.signal || (record.exit_code ?? 0) !== 0);
}

/** A badge: icon (hidden from screen readers), status word, detail; working ones tick. */
export function statusBadge(record) {
  const state = stateOf(record);
  const look = failed(record) ? "failed" : state;
  const detail = statusDetail(record);
  const badge = h(
    "span",
    { class: `badge s-${look}`, dataset: { state }, title: record.status },
    h("span", { class: "icon", "aria-hidden": "true" }, ICONS[look] || "\u2022"),
    h("span", { class: "word" }, state),
  );
  if (detail) badge.append(h("span", { class: "detail" }, detail));
  if ((state === "working" || state === "paused") && record.started_at) {
    badge.append(h("span", { class: "detail clock", dataset: { since: record.started_at } },
      duration((Date.now() - Date.parse(record.started_at)) / 1000)));
  }
  return badge;
}

/** 0.4 s, 12 s, 3m 04s, 2h 05m. */
export function duration(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return "";
  seconds = Math.max(0, seconds);
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${String(Math.floor(seconds % 60)).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}

export function runTime(record) {
  if (record.duration_seconds != null) return duration(record.duration_seconds);
  if (record.started_at && record.finished_at) {
    return duration((Date.parse(record.finished_at) - Date.parse(record.started_at)) / 1000);
  }
  return "";
}

export function timeCell(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return h("time", { datetime: iso, title: date.toISOString() }, date.toLocaleString());
}

export function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function labelChips(labels) {
  return Object.entries(labels || {}).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`));
}

/** Every second, the running clocks on the page move on. */
export function startClocks() {
  setInterval(() => {
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = duration((Date.now() - Date.parse(el.dataset.since)) / 1000);
    }
  }, 1000);
}
