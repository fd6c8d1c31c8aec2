// One payload: its record, live output and the controls a run token may use.
import { download, json, specOf } from "./api.js";
import { announce, confirmAction, h } from "./dom.js";
import {
  bytes, commandLine, duration, isActive, isEnded, labelChips, stateOf, statusBadge, timeCell,
} from "./format.js";
import { OutputPane } from "./output.js";
import { follow } from "./sse.js";

const SIGNALS = [
  "SIGSTOP", "SIGCONT", "SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGKILL",
];
/** Signals that usually end a process: asked for a confirmation first. */
const ENDING = new Set(["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"]);

function field(name, value) {
  if (value === null || value === undefined || value === "" ||
      (Array.isArray(value) && !value.length)) return [];
  return [h("dt", {}, name), h("dd", {}, value)];
}

function recordFields(r) {
  return h(
    "dl", { class: "record" },
    field("id", h("code", {}, r.id)),
    field("pid", r.pid),
    field("exit code", r.exit_code),
    field("signal", r.signal),
    field("created", timeCell(r.created_at)),
    field("started", timeCell(r.started_at)),
    field("finished", timeCell(r.finished_at)),
    field("created by", r.created_by),
    field("labels", labelChips(r.labels)),
    field("cwd", r.cwd && h("code", {}, r.cwd)),
    field("env", r.env && Object.keys(r.env).join(", ")),
    field("secret env", r.secret_env_names && r.secret_env_names.join(", ")),
    field("stdin", r.stdin === "pipe" ? "pipe (open for writing)" : r.stdin != null ? "given" : null),
    field("timeout", r.timeout != null ? `${r.timeout} s` : null),
    field("idle timeout", r.idle_timeout != null ? `${r.idle_timeout} s` : null),
    field("priority", r.priority || null),
    field("executable", r.exe && h("code", {}, r.exe)),
    field("sha-256", r.exe_sha256 && h("code", { class: "hash" }, r.exe_sha256)),
  );
}

function usage(r) {
  if (!isEnded(r)) return null;
  const out = (stream) => {
    const dropped = r[`${stream}_dropped`];
    return `${bytes(r[`${stream}_bytes`] ?? 0)}${dropped ? `, ${bytes(dropped)} dropped` : ""}`;
  };
  return h(
    "section", { class: "usage", "aria-labelledby": "usage-title" },
    h("h2", { id: "usage-title" }, "Usage"),
    h(
      "dl", { class: "record" },
      field("duration", duration(r.duration_seconds)),
      field("cpu user", r.cpu_user_seconds != null ? `${r.cpu_user_seconds.toFixed(3)} s` : null),
      field("cpu system",
        r.cpu_system_seconds != null ? `${r.cpu_system_seconds.toFixed(3)} s` : null),
      field("max rss", r.max_rss_bytes != null ? bytes(r.max_rss_bytes) : null),
      field("stdout", out("stdout")),
      field("stderr", out("stderr")),
    ),
  );
}

export function detailView(main, { id }) {
  const controller = new AbortController();
  const { signal } = controller;
  const pane = new OutputPane();
  let record = null;
  const head = h("div", { class: "detail-head" });
  const actions = h("div", { class: "actions needs-run", role: "group", "aria-label": "Actions" });
  const info = h("div", { class: "detail-info" });
  const link = h("span", { class: "link-state", "aria-live": "polite" });

  async function act(work, done) {
    try {
      const result = await work();
      if (done) announce(done);
      return result;
    } catch (error) {
      announce(error.message, "error");
      return null;
    }
  }

  function stdinForm() {
    const text = h("textarea", { id: "stdin-text", name: "data", rows: "2" });
    const close = h("input", { type: "checkbox", id: "stdin-close", name: "close" });
    return h(
      "form", {
        class: "stdin needs-run",
        onsubmit: async (event) => {
          event.preventDefault();
          const sent = await act(
            () => json(`/payloads/${id}/stdin`, {
              method: "POST", body: { data: text.value, close: close.checked },
            }),
          );
          if (sent) {
            announce(`Wrote ${sent.written} bytes to stdin${sent.closed ? " and closed it" : ""}.`);
            text.value = "";
          }
        },
      },
      h("label", { for: "stdin-text" }, "Send to stdin"),
      text,
      h("label", { class: "inline" }, close, " close stdin after"),
      h("button", { type: "submit" }, "Send"),
    );
  }

  function controls(r) {
    const active = isActive(r);
    const buttons = [];
    if (active) {
      buttons.push(h("button", {
        type: "button", class: "danger",
        onclick: async () => {
          if (await confirmAction("Cancel this payload?",
            `${commandLine(r)} will be stopped (SIGTERM, then SIGKILL after its grace).`,
            "Cancel payload")) {
            await act(() => json(`/payloads/${id}/cancel`, { method: "POST" }), "Cancelled.");
          }
        },
      }, "Cancel"));
    }
    if (active && stateOf(r) !== "pending") {
      const choice = h("select", { id: "signal-name", name: "signal" },
        SIGNALS.map((s) => h("option", { value: s }, s)));
      buttons.push(h(
        "form", {
          class: "signal",
          onsubmit: async (event) => {
            event.preventDefault();
            const name = choice.value;
            if (ENDING.has(name) && !await confirmAction(`Send ${name}?`,
              `${name} usually ends ${commandLine(r)}.`, `Send ${name}`)) return;
            await act(() => json(`/payloads/${id}/signal`, {
              method: "POST", body: { signal: name },
            }), `Sent ${name}.`);
          },
        },
        h("label", { for: "signal-name" }, "Signal"), choice,
        h("button", { type: "submit" }, "Send signal"),
      ));
    }
    buttons.push(h("button", {
      type: "button",
      onclick: async () => {
        const created = await act(() => json("/payloads", { method: "POST", body: specOf(r) }));
        if (created) location.hash = `#/payloads/${created.id}`;
      },
      title: r.secret_env_names ? "secret_env values are never kept, so they are not sent again" : null,
    }, "Run again"));
    buttons.push(h("button", {
      type: "button", class: "danger",
      onclick: async () => {
        if (!await confirmAction("Delete this payload?",
          `Its record and output are forgotten${active ? "; it is cancelled first" : ""}.`,
          "Delete")) return;
        const gone = await act(
          () => json(`/payloads/${id}?force=${active}`, { method: "DELETE" }).then(() => true),
          "Deleted.",
        );
        if (gone) location.hash = "#/";
      },
    }, "Delete"));
    actions.replaceChildren(...buttons);
    if (active && r.stdin === "pipe") actions.append(stdinForm());
  }

  function show(r) {
    const wasActive = record && isActive(record);
    const changed = !record || record.status !== r.status;
    record = r;
    head.replaceChildren(
      h("h1", { tabindex: "-1", class: "cmd-title" }, commandLine(r)),
      statusBadge(r),
    );
    info.replaceChildren(recordFields(r), usage(r) || "");
    // Rebuilding the controls would drop what the user typed into stdin: only on a change.
    if (changed || wasActive !== isActive(r)) controls(r);
  }

  const toolbar = h(
    "div", { class: "toolbar" },
    h("span", { class: "streams", role: "group", "aria-label": "Streams shown" }, pane.toggles),
    link,
    ["stdout", "stderr"].map((stream) => h("button", {
      type: "button", onclick: () => act(() => download(id, stream)),
    }, `Download ${stream}`)),
  );
  main.replaceChildren(
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "\u2190 All payloads")),
    head, actions, info,
    h("section", { class: "output", "aria-label": "Output" }, toolbar, pane.trimmed, pane.pre),
  );

  (async () => {
    try {
      show(await json(`/payloads/${id}`, { signal }));
      main.querySelector("h1").focus();
    } catch (error) {
      if (signal.aborted) return;
      head.replaceChildren(h("h1", { tabindex: "-1" }, "Payload not found"));
      announce(error.message, "error");
      return;
    }
    await follow(`/payloads/${id}/events`, {
      signal,
      resume: () => record && isActive(record),
      onEvent: (type, data, eventId) => {
        if (type === "output") pane.add(JSON.parse(data), eventId);
        else if (type === "status") show(JSON.parse(data));
      },
      onState: (state) => {
        link.textContent = { open: "live", reconnecting: "reconnecting\u2026", ended: "ended",
          gone: "deleted" }[state];
        if (state === "ended") pane.end();
      },
    });
  })();
  return { destroy: () => controller.abort() };
}
