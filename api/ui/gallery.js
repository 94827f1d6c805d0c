// A job as a card of thumbnails, and one image's details: its scores, and every attempt with its seed and the
// reason it was regenerated. Shared by the job page and the batch page.

import { age, h, imageSource, replace, score } from "./dom.js";

export const ENDED = new Set(["succeeded", "failed", "cancelled"]);  // job statuses, and their event names
export const ended = (job) => ENDED.has(job.status);

function thumbnail(job, output, select) {
  const img = h("img", { alt: `image ${output.index} of job ${job.id}`, width: 128, height: 128 });
  imageSource(job, output).then((src) => { img.src = src; }, () => { img.alt = "could not load the image"; });
  return h("button", { type: "button", class: "thumb", title: `score ${score(output.score)}`,
                       "data-retried": output.attempts.length > 1, onclick: () => select(job, output) },
    img, h("span", { class: "score" }, score(output.score)),
    output.attempts.length > 1 ? h("span", { class: "retried" }, `${output.attempts.length} attempts`) : null);
}

export function card(job, select) {
  const images = job.outputs.map((output) => thumbnail(job, output, select));
  return h("article", { class: `card ${job.status}`, "data-job": job.id, "data-status": job.status },
    h("p", { class: "prompt" }, job.request.prompt),
    images.length ? h("div", { class: "thumbs" }, images) : h("div", { class: "placeholder" }, job.status),
    job.error ? h("p", { class: "error" }, job.error) : null,
    h("a", { href: `#/jobs/${job.id}`, class: "status" }, job.status));
}

function scoresList(scores) {
  return h("dl", { class: "scores" }, Object.entries(scores || {}).flatMap(([name, value]) =>
    [h("dt", {}, name), h("dd", {}, score(value))]));
}

export function details(panel, job, output) {
  const rows = output.attempts.map((attempt, n) => {
    const kept = attempt.seed === output.seed;
    return h("tr", { class: kept ? "attempt kept" : "attempt" },
      h("td", {}, String(n + 1)), h("td", {}, String(attempt.seed), kept ? " (kept)" : ""),
      h("td", {}, score(attempt.score)),
      h("td", {}, Object.entries(attempt.scores || {}).map(([k, v]) => `${k} ${score(v)}`).join(", ")),
      h("td", { class: "reason" }, attempt.reason || "passed"));
  });
  replace(panel,
    h("button", { type: "button", class: "close", "aria-label": "close", onclick: () => { panel.hidden = true; } }, "×"),
    h("h3", {}, `Image ${output.index} of job `, h("a", { href: `#/jobs/${job.id}` }, job.id)),
    h("p", {}, `kept seed ${output.seed}, score ${score(output.score)}, ${output.width}×${output.height}`),
    scoresList(output.scores),
    h("table", { class: "attempts" },
      h("thead", {}, h("tr", {}, ["#", "seed", "score", "by scorer", "why regenerated"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)),
    job.finished_at ? h("p", { class: "muted" }, `finished ${new Date(job.finished_at).toLocaleString()}`) : null,
    job.timings?.queued_s ? h("p", { class: "muted" }, `waited ${age(job.timings.queued_s)} in the queue`) : null);
  panel.hidden = false;
}
