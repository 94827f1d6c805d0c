// A batch: progress from its event stream; its jobs a page at a time (a 10,000-job batch never puts 10,000
// images on the page), ordered and filtered on the server; cancel; the manifest once it has finished.

import { blobUrl, call, events } from "./api.js";
import { h, progressBar, replace } from "./dom.js";
import { card, details } from "./gallery.js";

const PAGE = 48;

export async function batchPage(view, id, signal) {
  const state = { offset: 0, order: "submitted", only: "all" };
  const head = h("div", { class: "head" });
  const bar = h("div", {}, progressBar(0, "batch"));
  const grid = h("div", { class: "grid" });
  const pager = h("div", { class: "pager" });
  const panel = h("aside", { class: "details", hidden: true });
  const choose = (name, options) => h("select", { name, onchange: (e) => {
    state[name] = e.target.value; state.offset = 0; refresh();
  } }, options.map(([value, label]) => h("option", { value }, label)));
  const filters = h("div", { class: "filters" },
    h("label", {}, "Order ", choose("order", [["submitted", "as submitted"], ["score", "lowest score first"]])),
    h("label", {}, "Show ", choose("only", [["all", "all"], ["retried", "retried only"], ["failed", "failed only"]])));
  replace(view, head, bar, filters, pager, grid, panel);
  const select = (job, output) => details(panel, job, output);

  let pending = null;
  async function refresh() {
    const query = `offset=${state.offset}&limit=${PAGE}&order=${state.order}&only=${state.only}`;
    const page = await call("GET", `/v1/batches/${id}/jobs?${query}`);
    replace(grid, page.items.map((job) => card(job, select)));
    grid.dataset.query = query;  // what the grid shows (the tests wait on it)
    const last = Math.min(page.total, state.offset + PAGE);
    replace(pager,
      h("button", { type: "button", disabled: state.offset === 0,
                    onclick: () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); } }, "‹ Previous"),
      h("span", { id: "page-range" }, page.total ? `${state.offset + 1}–${last} of ${page.total}` : "no jobs"),
      h("button", { type: "button", disabled: last >= page.total,
                    onclick: () => { state.offset += PAGE; refresh(); } }, "Next ›"));
  }
  // progress events can come many a second: the grid reloads at most once a second
  const soon = () => { pending ??= setTimeout(() => { pending = null; refresh(); }, 1000); };

  function render(batch) {
    const c = batch.counts;
    const cancel = h("button", { type: "button", class: "cancel", disabled: batch.status === "finished",
      onclick: async () => { cancel.disabled = true; render(await call("DELETE", `/v1/batches/${id}`)); refresh(); } },
      "Cancel queued jobs");
    const manifest = batch.status === "finished" ? h("a", { id: "manifest", download: `manifest-${id}.json`,
      href: "#", onclick: async (e) => {
        if (e.currentTarget.dataset.ready) return;
        e.preventDefault();
        const link = e.currentTarget;
        link.href = await blobUrl(`/v1/batches/${id}/manifest`);
        link.dataset.ready = "1";
        link.click();
      } }, "Manifest") : null;
    replace(head, h("h2", {}, "Batch ", h("code", {}, batch.id)),
      h("p", {}, h("span", { class: `badge ${batch.status}`, id: "batch-status" }, batch.status),
        ` ${batch.model} · ${c.total} jobs: ${c.queued} queued, ${c.running} running, ${c.succeeded} succeeded, `
        + `${c.failed} failed, ${c.cancelled} cancelled`), cancel, manifest);
    replace(bar, progressBar(batch.progress, "batch"));
  }

  render(await call("GET", `/v1/batches/${id}`));
  await refresh();
  for await (const event of events(`/v1/batches/${id}/events`, signal)) {
    render(event.data);
    if (event.data.status === "finished") { await refresh(); return; }
    soon();
  }
}
