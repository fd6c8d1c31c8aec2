// The output pane: stdout and stderr in the order read, ANSI colours, dropped-bytes
// markers, a toggle per stream, and following the tail unless the reader scrolled up.
import { AnsiParser } from "./ansi.js";
import { h } from "./dom.js";
import { bytes } from "./format.js";

const STREAMS = ["stdout", "stderr"];
/** Characters kept on screen; past it the oldest go (the download has everything kept). */
const MAX_SHOWN = 2_000_000;

export class OutputPane {
  constructor() {
    this.next = { stdout: 0, stderr: 0 };
    this.parsers = { stdout: new AnsiParser(), stderr: new AnsiParser() };
    this.queue = [];
    this.shown = 0;
    this.following = true;
    this.frame = null;
    this.pre = h("pre", {
      class: "term", tabindex: "0", "aria-label": "Output (stdout and stderr)",
      onscroll: () => {
        const { scrollTop, clientHeight, scrollHeight } = this.pre;
        this.following = scrollTop + clientHeight >= scrollHeight - 8;
      },
    });
    this.trimmed = h("p", { class: "trimmed", hidden: true },
      "Earlier output is not shown here; download a stream for all that the server kept.");
    this.toggles = STREAMS.map((stream) => h(
      "label", { class: `toggle t-${stream}` },
      h("input", {
        type: "checkbox", checked: true, name: stream,
        onchange: (e) => this.pre.classList.toggle(`hide-${stream}`, !e.target.checked),
      }),
      ` ${stream}`,
    ));
    this.empty = h("span", { class: "placeholder" }, "No output yet.");
    this.pre.append(this.empty);
  }

  /**
   * An `output` event `{stream, offset, text}` with its id `<stdout>.<stderr>.<state>`, the
   * offsets after it (exact even where invalid UTF-8 was replaced in `text`). An offset past
   * where the stream had got to means the bytes in between were dropped.
   */
  add({ stream, offset, text }, id) {
    if (offset > this.next[stream]) {
      this.queue.push([stream, null, offset - this.next[stream]]);
    }
    const [stdout, stderr] = (id || "").split(".").map(Number);
    if (Number.isFinite(stdout) && Number.isFinite(stderr)) this.next = { stdout, stderr };
    this.queue.push([stream, text, 0]);
    this.schedule();
  }

  /** No more output will come: show what the parsers held back. */
  end() {
    for (const stream of STREAMS) this.queue.push([stream, "", 0, true]);
    this.schedule();
  }

  // Events can come in thousands a second: the DOM changes once per frame.
  schedule() {
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = null;
    if (!this.queue.length) return;
    this.empty.remove();
    const fragment = document.createDocumentFragment();
    for (const [stream, text, dropped, final] of this.queue.splice(0)) {
      if (dropped) {
        fragment.append(h("span", { class: `dropped out-${stream}`, role: "note" },
          `\n\u2026 ${bytes(dropped)} (${dropped} bytes) of ${stream} dropped \u2026\n`));
        continue;
      }
      const nodes = final ? this.parsers[stream].flush() : this.parsers[stream].feed(text);
      if (!nodes.length) continue;
      const chunk = h("span", { class: `out-${stream}` }, nodes);
      this.shown += chunk.textContent.length;
      fragment.append(chunk);
    }
    this.pre.append(fragment);
    while (this.shown > MAX_SHOWN && this.pre.firstChild) {
      this.shown -= this.pre.firstChild.textContent.length;
      this.pre.firstChild.remove();
      this.trimmed.hidden = false;
    }
    if (this.following) this.pre.scrollTop = this.pre.scrollHeight;
  }
}
