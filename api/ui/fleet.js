// The fleet at a glance: the caller's tenant (its jobs waiting, its last day's usage), queue depth and oldest
// waiting job per priority, workers alive with the models they keep warm, and images stored per minute over the
// last hour. Refreshed every five seconds while shown.

import { call } from "./api.js";
import { age, h, replace } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function chart(counts) {
  const top = Math.max(1, ...counts);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${counts.length * 4} 40`);
  svg.setAttribute("class", "chart");
  counts.forEach((n, i) => {
    const bar = document.createElementNS(SVG, "rect");
    const height = (n / top) * 40;
    for (const [k, v] of Object.entries({ x: i * 4, y: 40 - height, width: 3, height })) bar.setAttribute(k, v);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${counts.length - 1 - i} min ago: ${n} images`;
    bar.append(title);
    svg.append(bar);
  });
  return svg;
}

function tenant(t) {
  const day = t.last_day;
  return h("p", { id: "tenant" }, h("code", {}, t.tenant), ` waiting: `, h("span", { class: "waiting" }, String(t.waiting)),
    ` · last 24 h: `, h("span", { class: "images" }, String(day.images)), ` images in ${day.jobs} jobs, `,
    h("span", { class: "accelerator" }, day.accelerator_s.toFixed(1)), ` accelerator s`);
}

function render(fleet) {
  const perMinute = fleet.images_per_minute;
  const lastHour = perMinute.slice(0, -1).reduce((a, b) => a + b, 0);
  const total = fleet.queues.reduce((a, q) => a + q.depth, 0);
  return [
    h("h2", {}, "Fleet"),
    h("h3", {}, `Your tenant (of ${total} waiting in all)`),
    tenant(fleet.tenant),
    h("h3", {}, "Queues"),
    h("table", { id: "queues" },
      h("thead", {}, h("tr", {}, h("th", {}, "priority"), h("th", {}, "waiting"), h("th", {}, "oldest"))),
      h("tbody", {}, fleet.queues.map((q) => h("tr", { "data-priority": q.priority },
        h("td", {}, q.priority), h("td", { class: "depth" }, String(q.depth)),
        h("td", {}, q.depth ? age(q.oldest_age_s) : "–"))))),
    h("h3", {}, `Workers alive: ${fleet.workers.length}`),
    h("ul", { id: "workers" }, fleet.workers.map((w) => h("li", {},
      h("code", {}, w.id), ` warm: ${w.models.join(", ")} · holds ${w.held} · seen ${age(w.seen_s)} ago`))),
    h("h3", {}, `Images per minute (last hour: ${lastHour}, this minute: ${perMinute.at(-1)})`),
    chart(perMinute),
  ];
}

export async function fleetPage(view, signal) {
  while (!signal.aborted) {
    replace(view, render(await call("GET", "/v1/fleet")));
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 5000);
      signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }
}
