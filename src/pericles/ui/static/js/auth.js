// The bearer token: asked for when the server wants one, kept in this tab only.
const KEY = "pericles.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export function authHeaders() {
  const value = token();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

/** Thrown for a 401: the app asks for a token and starts again. */
export class AuthRequired extends Error {}

/**
 * What this tab may do: "run", "read", or "none" (no valid token).
 *
 * The probe is `POST /payloads/check` with an empty body: a run token (or a server without
 * tokens) gets 422 for the missing cmd, a read token 403, and nothing is started or stored.
 */
export async function probeScope() {
  const response = await fetch("/payloads/check", {
    method: "POST",
    headers: { ...authHeaders(), "Content-Type": "application/json" },
    body: "{}",
  });
  if (response.status === 401) return "none";
  if (response.status === 403) return "read";
  return "run";
}

/** Show the token dialog until a token the server takes is given; resolves to its scope. */
export function askToken(message = "") {
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.textContent = message;
  input.value = "";
  return new Promise((resolve) => {
    const submit = async (event) => {
      event.preventDefault();
      setToken(input.value.trim());
      const scope = await probeScope();
      if (scope === "none") {
        setToken(null);
        error.textContent = "The server did not accept this token.";
        input.focus();
        return;
      }
      form.removeEventListener("submit", submit);
      dialog.close();
      resolve(scope);
    };
    form.addEventListener("submit", submit);
    // Escape would leave the page without a token: keep the dialog open.
    dialog.addEventListener("cancel", (event) => event.preventDefault());
    dialog.showModal();
    input.focus();
  });
}
