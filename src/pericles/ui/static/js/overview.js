// The strip at the top: how many payloads run, wait and have ended, and a sparkline of
// the payloads that ended in each of the last 60 five-second buckets.
import { json } from "./api.js";
import { h } from "./dom.js";
import { isEnded } from "./format.js";

const BUCKETS = 60;
const BUCKET_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";

export function overview(strip, feed) {
  const ended = new Array(BUCKETS).fill(0);
  let bucketStart = Date.now();
  const figures = {};
  const figure = (key, label) => {
    figures[key] = h("span", { class: "figure", id: `count-${key}` }, "\u2013");
    return h("span", { class: `count k-${key}` }, figures[key], h("span", { class: "label" }, label));
  };
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${BUCKETS * 2} 20`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(SVG, "polyline");
  svg.append(line);
  const rate = h("span", { class: "sr-only", id: "throughput" });
  strip.replaceChildren(
    figure("running", "running"), figure("pending", "pending"),
    figure("finished", "finished"), figure("failed", "failed"),
    figure("cancelled", "cancelled"),
    h("span", { class: "count k-rate", title: "Payloads ended per 5 s, last 5 minutes" },
      svg, h("span", { class: "label", "aria-hidden": "true" }, "ended, 5 min"), rate),
  );

  function roll() {
    while (Date.now() - bucketStart >= BUCKET_MS) {
      ended.shift();
      ended.push(0);
      bucketStart += BUCKET_MS;
    }
  }

  function draw() {
    roll();
    const top = Math.max(1, ...ended);
    line.setAttribute("points", ended.map((n, i) => `${i * 2},${19 - (n / top) * 18}`).join(" "));
    const total = ended.reduce((a, b) => a + b, 0);
    rate.textContent = `${total} ended in the last 5 minutes`;
  }

  let pending = null;
  async function refresh() {
    pending = null;
    try {
      const counts = (await json("/payloads/counts")).by_status;
      figures.running.textContent = counts.working + counts.paused;
      figures.pending.textContent = counts.pending;
      figures.finished.textContent = counts.finished;
      figures.failed.textContent = counts.error + counts.timeout + counts.lost;
      figures.cancelled.textContent = counts.cancelled;
    } catch {
      // the next event tries again
    }
  }

  // Counts are asked again at most once a second, however busy the feed is.
  feed.addEventListener("status", (event) => {
    if (isEnded(event.detail)) {
      roll();
      ended[BUCKETS - 1] += 1;
      draw();
    }
    if (pending === null) pending = setTimeout(refresh, 1000);
  });
  // The line starts with what ended before the page was opened, from the newest records.
  async function seed() {
    try {
      const recent = await json(`/payloads?order=desc&limit=500`);
      const now = Date.now();
      for (const record of recent) {
        if (!record.finished_at) continue;
        const age = Math.floor((now - Date.parse(record.finished_at)) / BUCKET_MS);
        if (age >= 0 && age < BUCKETS) ended[BUCKETS - 1 - age] += 1;
      }
      draw();
    } catch {
      // an empty line until events come
    }
  }

  feed.addEventListener("synced", () => refresh());
  setInterval(draw, BUCKET_MS);
  draw();
  seed();
  refresh();
}
