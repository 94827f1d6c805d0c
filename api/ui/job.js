// One job: its status, step progress and thumbnails, filled in live from its event stream; a cancel button.
// While it samples, the worker's previews (it sends them because this page listens) fill the thumbnails in.

import { call, events } from "./api.js";
import { h, progressBar, replace } from "./dom.js";
import { card, details, ended, ENDED } from "./gallery.js";

export async function jobPage(view, id, signal) {
  const head = h("div", { class: "head" });
  const bar = h("div", {}, progressBar(0, "steps"));
  const body = h("div", { class: "grid" });
  const previews = h("div", { class: "thumbs previews", id: "previews" });
  const panel = h("aside", { class: "details", hidden: true });
  replace(view, head, bar, previews, body, panel);
  const showPreview = ({ index, step, steps, image }) => {
    // a blob: URL, which the page's Content-Security-Policy allows for images (data: it does not)
    const bytes = Uint8Array.from(atob(image), (c) => c.charCodeAt(0));
    const src = URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
    const img = h("img", { class: "preview", alt: `image ${index} at step ${step} of ${steps}`, width: 128, height: 128,
                           src, "data-index": index, "data-step": step });
    const old = previews.querySelector(`img[data-index="${index}"]`);
    if (old) { URL.revokeObjectURL(old.src); old.replaceWith(img); } else previews.append(img);
  };
  const select = (job, output) => details(panel, job, output);

  const render = (job) => {
    const cancel = h("button", { type: "button", class: "cancel", disabled: ended(job), onclick: async () => {
      cancel.disabled = true;
      try { render(await call("DELETE", `/v1/jobs/${id}`)); } catch (e) { head.append(h("p", { class: "error" }, e.message)); }
    } }, "Cancel");
    replace(head, h("h2", {}, "Job ", h("code", {}, job.id)),
      h("p", {}, h("span", { class: `badge ${job.status}`, id: "job-status" }, job.status),
        ` ${job.model} · seed ${job.seed} · ${job.request.num_images} image(s)`), cancel);
    replace(body, card(job, select));
    if (ended(job)) { replace(bar, progressBar(1, "steps")); replace(previews); }
  };

  let job = await call("GET", `/v1/jobs/${id}`);
  render(job);
  for await (const event of events(`/v1/jobs/${id}/events`, signal)) {
    if (event.event === "progress") {
      replace(bar, progressBar(event.data.step / event.data.steps, "steps"));
    } else if (event.event === "preview") {
      showPreview(event.data);
    } else if (ENDED.has(event.event)) {
      job = await call("GET", `/v1/jobs/${id}`);  // the record with its download links
      render(job);
    } else {
      render(event.data);
    }
  }
}
