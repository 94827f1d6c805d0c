import { blobUrl } from "./api.js";

// Building the page from data without ever parsing data as HTML: every string becomes a text node or an
// attribute value, so a prompt such as "<script>…" shows as characters and runs nothing.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const replace = (el, ...children) => el.replaceChildren(...children.flat().filter((c) => c != null));

export const score = (value) => (value === null || value === undefined ? "–" : Number(value).toFixed(3));

export function age(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function progressBar(fraction, label) {
  return h("div", { class: "progress" },
    h("progress", { max: 1, value: fraction, "aria-label": label }),
    h("span", { class: "percent" }, `${Math.round(fraction * 100)}%`));
}

// Where an image's thumbnail comes from: its presigned link, or the API when the storage is a local folder.
export async function imageSource(job, output) {
  if (/^https?:\/\//.test(output.download_url || "")) return output.download_url;
  return blobUrl(`/v1/jobs/${job.id}/images/${output.index}`);
}
