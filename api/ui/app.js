// The router: `#/` submit, `#/jobs/ID`, `#/batches/ID`, `#/fleet`. A page that meets a 401 asks for a key;
// one that meets a 404 says "not found" (another tenant's job reads exactly like a missing one).

import { forgetKey, key, setKey, Unauthorized } from "./api.js";
import { batchPage } from "./batch.js";
import { h, replace } from "./dom.js";
import { fleetPage } from "./fleet.js";
import { jobPage } from "./job.js";
import { submitPage } from "./submit.js";

const view = () => document.getElementById("view");
let current = new AbortController();

function askForKey(refused) {
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", name: "key" });
  const form = h("form", { id: "key-form", onsubmit: (e) => {
    e.preventDefault();
    setKey(input.value.trim());
    route();
  } }, h("label", { for: "api-key" }, "API key"), input, h("button", { type: "submit" }, "Use this key"));
  replace(view(), h("h2", {}, "This API needs a key"),
    refused ? h("p", { class: "error", id: "key-refused" }, "That key was refused.") : null, form,
    h("p", { class: "muted" }, "It stays in this tab's session storage and is sent only to this API."));
  input.focus();
}

async function route() {
  current.abort();
  current = new AbortController();
  const { signal } = current;
  document.getElementById("forget-key").hidden = !key();
  const [, page, id] = location.hash.replace(/^#/, "").split("/");
  try {
    if (page === "jobs" && id) await jobPage(view(), id, signal);
    else if (page === "batches" && id) await batchPage(view(), id, signal);
    else if (page === "fleet") await fleetPage(view(), signal);
    else await submitPage(view());
  } catch (error) {
    if (signal.aborted || error.name === "AbortError") return;
    if (error instanceof Unauthorized) askForKey(Boolean(key()));
    else if (error.status === 404) replace(view(), h("h2", { id: "not-found" }, "Not found"), h("p", {}, error.message));
    else replace(view(), h("h2", {}, "Something went wrong"), h("p", { class: "error" }, error.message));
  }
}

window.addEventListener("hashchange", route);
// a 401 met by a button or a form (outside `route`) asks for a key too; anything else is shown where it happened
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof Unauthorized) {
    event.preventDefault();
    askForKey(true);
  }
});
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("forget-key").addEventListener("click", () => { forgetKey(); route(); });
  route();
});
