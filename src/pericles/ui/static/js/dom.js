// Building DOM from nodes, never from HTML strings: text from the server stays text.

/** An element with attributes, listeners (onclick: fn) and children (nodes or text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" || key === "checked") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A message in the live region at the top of the page; errors stay until replaced. */
export function announce(text, kind = "info") {
  const box = document.getElementById("messages");
  box.replaceChildren(h("p", { class: `message ${kind}` }, text));
  if (kind !== "error") {
    const shown = box.firstChild;
    setTimeout(() => shown.remove(), 5000);
  }
}

const confirmDialog = () => document.getElementById("confirm-dialog");

/** A modal yes/no question; resolves true when confirmed. */
export function confirmAction(title, text, yes = "Confirm") {
  const dialog = confirmDialog();
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  dialog.querySelector("#confirm-yes").textContent = yes;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    dialog.querySelector("#confirm-no").focus();
  });
}
