// Server-Sent Events over fetch: EventSource cannot send an Authorization header.
import { AuthRequired, authHeaders } from "./auth.js";

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/**
 * Read the event stream at `path` until `signal` aborts, calling `onEvent(type, data, id)`.
 *
 * After a network drop it connects again with `Last-Event-ID`, so the server goes on from
 * the last event seen: no gap, no repeat. When the server ends the stream, it connects
 * again only if `resume()` says so. `onState` hears "open", "reconnecting", "ended", "gone".
 */
export async function follow(path, { onEvent, onState = () => {}, resume = () => true, signal }) {
  let lastEventId = null;
  let delay = 250;
  while (!signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      const response = await fetch(path, { headers, signal, cache: "no-store" });
      if (response.status === 401) {
        document.dispatchEvent(new Event("pericles:auth-required"));
        throw new AuthRequired();
      }
      if (response.status === 404) {
        onState("gone");
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      onState("open");
      delay = 250;
      lastEventId = await read(response, onEvent, lastEventId);
      if (!resume()) {
        onState("ended");
        return;
      }
    } catch (error) {
      if (signal.aborted || error instanceof AuthRequired) return;
      if (error.lastEventId !== undefined) lastEventId = error.lastEventId;
    }
    onState("reconnecting");
    await pause(delay, signal);
    delay = Math.min(delay * 2, 8000);
  }
}

/** Parse one response's events; returns the last event id (also on the error it throws). */
async function read(response, onEvent, lastEventId) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let type = "message";
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return lastEventId;
      buffer += value;
      let start = 0;
      let end;
      // Index, not repeated slicing: a megabyte of buffered lines stays linear.
      while ((end = buffer.indexOf("\n", start)) >= 0) {
        let line = buffer.slice(start, end);
        start = end + 1;
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          // The id counts as seen only once its event is handled: a drop in between
          // resumes from the event before, so this one comes again instead of never.
          if (id !== null) lastEventId = id;
          if (data.length) onEvent(type, data.join("\n"), lastEventId);
          data = [];
          type = "message";
          id = null;
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "data") data.push(text);
          else if (field === "event") type = text;
          else if (field === "id") id = text;
        }
      }
      buffer = buffer.slice(start);
    }
  } catch (error) {
    error.lastEventId = lastEventId;
    throw error;
  }
}
