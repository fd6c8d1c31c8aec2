// The dashboard: find out what this tab may do, follow the event feed, route by the hash.
import { askToken, probeScope, setToken, token } from "./auth.js";
import { createView } from "./create.js";
import { detailView } from "./detail.js";
import { startClocks } from "./format.js";
import { listView } from "./list.js";
import { overview } from "./overview.js";
import { follow } from "./sse.js";

/** Every payload transition from `/events`, as "status" events with the record as detail. */
const feed = new EventTarget();
const main = document.getElementById("main");
let view = null;
let feedController = null;

function route() {
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return; // an in-page anchor, not a view
  view?.destroy();
  const detail = hash.match(/^#\/payloads\/([0-9a-f]{32})$/);
  if (detail) view = detailView(main, { id: detail[1] });
  else if (hash === "#/new") view = createView(main);
  else view = listView(main, { feed });
  // Tell screen readers where they are: the new view's heading takes the focus.
  requestAnimationFrame(() => main.querySelector("h1")?.focus());
}

function followFeed() {
  feedController?.abort();
  feedController = new AbortController();
  follow("/events", {
    signal: feedController.signal,
    // Transitions made before the feed was connected are in no event: once it is open,
    // views read their state again ("synced"), so nothing that happened in between is lost.
    onState: (state) => {
      if (state === "open") feed.dispatchEvent(new Event("synced"));
    },
    onEvent: (type, data) => {
      if (type === "status") feed.dispatchEvent(new CustomEvent("status", { detail: JSON.parse(data) }));
    },
  });
}

function applyScope(scope) {
  document.body.classList.toggle("can-run", scope === "run");
  document.getElementById("scope").textContent = token()
    ? (scope === "run" ? "run token" : "read-only token") : "";
  document.getElementById("token-button").hidden = !token();
}

async function start() {
  let scope = await probeScope();
  while (scope === "none") scope = await askToken();
  applyScope(scope);
  followFeed();
  overview(document.getElementById("overview"), feed);
  route();
}

// A token that stops working (revoked, server restarted with others) asks again.
let asking = false;
document.addEventListener("pericles:auth-required", async () => {
  if (asking) return;
  asking = true;
  setToken(null);
  applyScope(await askToken("The server did not accept the token."));
  asking = false;
  followFeed();
  route();
});

document.getElementById("token-button").addEventListener("click", () => {
  setToken(null);
  location.reload();
});
window.addEventListener("hashchange", route);
startClocks();
start();
