// The JSON API, with the token and RFC 9457 problem answers turned into errors.
import { AuthRequired, authHeaders } from "./auth.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export async function request(path, { method = "GET", body, signal } = {}) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (response.status === 401) {
    document.dispatchEvent(new Event("pericles:auth-required"));
    throw new AuthRequired("a token is required");
  }
  if (!response.ok) {
    let problem = {};
    try {
      problem = await response.json();
    } catch {
      // not a problem body: the status says enough
    }
    throw new ApiError(response.status, problem);
  }
  return response;
}

export async function json(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

/** The spec of a record, as `POST /payloads` takes it: for "run again". */
export function specOf(record) {
  const spec = { cmd: record.cmd, params: record.params || [] };
  for (const key of [
    "env", "cwd", "stdin", "timeout", "idle_timeout", "kill_grace", "limits", "labels",
  ]) {
    if (record[key] != null) spec[key] = record[key];
  }
  if (record.priority) spec.priority = record.priority;
  return spec;
}

/** Save a payload's stream as a file (a link cannot carry the Authorization header). */
export async function download(id, stream) {
  const response = await request(`/payloads/${id}/output?stream=${stream}`);
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), {
    href: url,
    download: `${id}.${stream}.txt`,
  });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
