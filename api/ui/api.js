// The public API, as this page calls it. The key a person types in lives in this tab's session storage and
// travels as a Bearer header: never in a URL, never in a cookie. Server-Sent Events are read over fetch()
// for the same reason (EventSource cannot send a header).

const KEY = "genfleet.key";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, body) {
    super(typeof body?.detail === "string" ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export const key = () => sessionStorage.getItem(KEY);
export const setKey = (value) => sessionStorage.setItem(KEY, value);
export const forgetKey = () => sessionStorage.removeItem(KEY);

function headers(extra = {}) {
  const k = key();
  return k ? { ...extra, Authorization: `Bearer ${k}` } : extra;
}

async function checked(res) {
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok) {
    const body = (res.headers.get("content-type") || "").includes("json") ? await res.json() : null;
    throw new ApiError(res.status, body);
  }
  return res;
}

export async function call(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await checked(await fetch(path, init));
  return res.status === 204 ? null : res.json();
}

// A local object URL for something only a keyed request may fetch (an image from a local folder, a manifest).
export async function blobUrl(path) {
  const res = await checked(await fetch(path, { headers: headers() }));
  return URL.createObjectURL(await res.blob());
}

function parseEvent(block) {
  const event = { event: "message", data: [] };
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "event") event.event = value;
    else if (field === "data") event.data.push(value);
    else if (field === "id") event.id = value;
  }
  return event.data.length ? { ...event, data: JSON.parse(event.data.join("\n")) } : null;
}

// Yields {event, id, data} until the stream ends (the server ends it after a terminal event) or `signal` aborts.
export async function* events(path, signal) {
  const res = await checked(await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal }));
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    // a blank line ends an event; "\r\n" is one line break, not two
    while ((end = buffer.search(/\r\n\r\n|\n\n|\r\r/)) >= 0) {
      const gap = buffer[end] === "\r" && buffer[end + 1] === "\n" ? 4 : 2;
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + gap);
      if (event) yield event;
    }
  }
}
