// Creating a payload: a form whose spec is checked against the policy as it is typed.
import { ApiError, json } from "./api.js";
import { announce, h } from "./dom.js";

/**
 * The kinds of create form, shown as tabs when there is more than one. Each has an `id`, a
 * `title` and `render(container, submit)`, where `submit(spec)` posts a payload spec.
 * Named actions (P13) add their forms here with `registerForm`.
 */
const forms = [];

export function registerForm(form) {
  forms.push(form);
}

/** `KEY=VALUE` lines as an object; `what` names the field in errors. */
function pairs(text, what) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`${what}: "${line}" is not NAME=VALUE`);
    out[line.slice(0, at)] = line.slice(at + 1);
  }
  return Object.keys(out).length ? out : undefined;
}

function input(name, label, attrs = {}, hint = "") {
  const id = `f-${name}`;
  const control = attrs.rows
    ? h("textarea", { id, name, "aria-describedby": hint ? `${id}-hint` : null, ...attrs })
    : h("input", { id, name, "aria-describedby": hint ? `${id}-hint` : null, ...attrs });
  return h(
    "div", { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("small", { id: `${id}-hint` }, hint) : null,
  );
}

function commandForm(container, submit) {
  const verdict = h("output", { class: "verdict", "aria-live": "polite", for: "f-cmd", tabindex: "-1" },
    "Type a command to see whether the policy allows it.");
  const button = h("button", { type: "submit", class: "primary" }, "Create");
  const form = h(
    "form", { class: "create", novalidate: true },
    input("cmd", "Command", { required: true, autocomplete: "off", spellcheck: "false" },
      "Executable path or a name found on PATH"),
    input("params", "Parameters", { rows: "3", spellcheck: "false" }, "One per line"),
    input("env", "Environment", { rows: "2", spellcheck: "false" }, "NAME=VALUE, one per line"),
    input("cwd", "Working directory", { spellcheck: "false" }),
    input("timeout", "Timeout (seconds)", { type: "number", min: "0", step: "any" }),
    input("labels", "Labels", { rows: "2", spellcheck: "false" }, "key=value, one per line"),
    input("stdin", "Standard input", { rows: "2" }, "Text fed to the process, then closed"),
    h("div", { class: "field inline" },
      h("label", {}, h("input", { type: "checkbox", name: "pipe" }),
        " keep stdin open, to write to it later")),
    h("div", { class: "check" }, h("span", {}, "Policy: "), verdict),
    h("div", { class: "buttons" }, button),
  );

  function spec() {
    const data = new FormData(form);
    const text = (name) => String(data.get(name) || "");
    const out = { cmd: text("cmd").trim() };
    out.params = text("params").split("\n").filter((line) => line !== "");
    const env = pairs(text("env"), "Environment");
    if (env) out.env = env;
    if (text("cwd").trim()) out.cwd = text("cwd").trim();
    if (text("timeout").trim()) out.timeout = Number(text("timeout"));
    const labels = pairs(text("labels"), "Labels");
    if (labels) out.labels = labels;
    if (data.get("pipe")) out.stdin = "pipe";
    else if (text("stdin")) out.stdin = text("stdin");
    return out;
  }

  let checked = null; // the spec (as JSON) the verdict is about, and whether it was allowed
  let allowed = false;
  let serial = 0;

  async function check() {
    const mine = ++serial;
    let body;
    try {
      body = spec();
    } catch (error) {
      verdict.className = "verdict bad";
      verdict.textContent = error.message;
      return false;
    }
    if (!body.cmd) {
      verdict.className = "verdict";
      verdict.textContent = "Type a command to see whether the policy allows it.";
      return false;
    }
    let text;
    let ok = false;
    try {
      const answer = await json("/payloads/check", { method: "POST", body });
      ok = answer.allowed;
      const exe = answer.exe ? ` \u2014 runs ${answer.exe}` : "";
      text = `${ok ? "\u2714 allowed" : "\u2716 refused"}: ${answer.reason}${exe}`;
    } catch (error) {
      text = `\u2716 ${error instanceof ApiError ? error.message : `could not check: ${error.message}`}`;
    }
    if (mine !== serial) return false; // a later edit is being checked
    verdict.className = `verdict ${ok ? "good" : "bad"}`;
    verdict.textContent = text;
    checked = JSON.stringify(body);
    allowed = ok;
    return ok;
  }

  let timer = null;
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearTimeout(timer);
    let body;
    try {
      body = spec();
    } catch (error) {
      announce(error.message, "error");
      return;
    }
    // The answer shown must be the answer for what is sent.
    const ok = checked === JSON.stringify(body) ? allowed : await check();
    if (!ok) {
      verdict.focus();
      announce("Not created: see the policy's answer.", "error");
      return;
    }
    button.disabled = true;
    try {
      await submit(body);
    } finally {
      button.disabled = false;
    }
  });
  container.replaceChildren(form);
}

registerForm({ id: "command", title: "Command", render: commandForm });

export function createView(main) {
  const body = h("div", { class: "form-body" });
  const submit = async (spec) => {
    try {
      const created = await json("/payloads", { method: "POST", body: spec });
      location.hash = `#/payloads/${created.id}`;
    } catch (error) {
      announce(`Not created: ${error.message}`, "error");
    }
  };
  const tabs = forms.length > 1
    ? h("div", { class: "tabs", role: "group", "aria-label": "Kind" }, forms.map((form) =>
      h("button", { type: "button", onclick: () => form.render(body, submit) }, form.title)))
    : null;
  main.replaceChildren(
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "\u2190 All payloads")),
    h("h1", { tabindex: "-1" }, "New payload"),
    tabs || "", body,
  );
  forms[0].render(body, submit);
  return { destroy: () => {} };
}
