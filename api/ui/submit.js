// The submit form: one job, or a file of prompts (one a line: plain text, or JSON Lines as the API takes them)
// as a batch sharing the form's parameters. The API validates; its errors are shown next to their fields.

import { ApiError, call, Unauthorized } from "./api.js";
import { h, replace } from "./dom.js";

const NUMBERS = ["width", "height", "steps", "guidance", "seed", "num_images"];

function field(name, label, input) {
  return h("div", { class: "field" }, h("label", { for: `f-${name}` }, label), input,
    h("span", { class: "error", "data-for": name }));
}

const input = (name, attrs = {}) => h("input", { id: `f-${name}`, name, ...attrs });

function form(models) {
  return h("form", { id: "submit", novalidate: true },
    field("prompt", "Prompt", h("textarea", { id: "f-prompt", name: "prompt", rows: 3 })),
    field("negative_prompt", "Negative prompt", input("negative_prompt")),
    h("div", { class: "row" },
      field("width", "Width", input("width", { inputmode: "numeric", placeholder: "model's" })),
      field("height", "Height", input("height", { inputmode: "numeric", placeholder: "model's" })),
      field("steps", "Steps", input("steps", { inputmode: "numeric", placeholder: "model's" })),
      field("guidance", "Guidance", input("guidance", { inputmode: "decimal", placeholder: "model's" }))),
    h("div", { class: "row" },
      field("seed", "Seed", input("seed", { inputmode: "numeric", placeholder: "random" })),
      field("num_images", "Images", input("num_images", { inputmode: "numeric", value: 1 })),
      field("priority", "Priority", h("select", { id: "f-priority", name: "priority" },
        ["normal", "high", "low"].map((p) => h("option", { value: p }, p)))),
      field("model", "Model", h("select", { id: "f-model", name: "model" },
        models.map((m, i) => h("option", { value: i === 0 ? "" : m }, i === 0 ? `${m} (default)` : m))))),
    field("prompts", "Or a file of prompts, one a line (a batch)", input("prompts", { type: "file" })),
    h("button", { type: "submit" }, "Generate"),
    h("p", { class: "error", "data-for": "form" }));
}

function params(data) {
  const out = {};
  for (const [name, value] of data.entries()) {
    if (name === "prompt" || name === "prompts" || value === "") continue;
    // a number the browser cannot read is sent as typed, so the API names the field in its 422
    out[name] = NUMBERS.includes(name) && value.trim() !== "" && !Number.isNaN(Number(value)) ? Number(value) : value;
  }
  return out;
}

function promptsOf(text) {
  return text.split(/\r?\n/).filter((line) => line.trim()).map((line) => {
    if (!/^\s*[{"]/.test(line)) return line;
    try { return JSON.parse(line); } catch { return line; }
  });
}

// The field an error belongs to: ["body", "steps"] for a job; ["body", "params", "steps"] or
// ["body", "prompts", 3, ...] for a batch.
function fieldOf(loc) {
  if (loc[1] === "params") return loc[2] ?? "form";
  if (loc[1] === "prompts") return "prompts";
  return loc[1] ?? "form";
}

function showErrors(el, error) {
  const detail = error instanceof ApiError && Array.isArray(error.body?.detail) ? error.body.detail : null;
  if (!detail) {
    el.querySelector('[data-for="form"]').textContent = error.message;
    return;
  }
  for (const item of detail) {
    const name = fieldOf(item.loc);
    const slot = el.querySelector(`[data-for="${name}"]`) || el.querySelector('[data-for="form"]');
    const where = item.loc[1] === "prompts" ? `prompt ${Number(item.loc[2]) + 1}: ` : "";
    slot.textContent = `${slot.textContent ? `${slot.textContent}; ` : ""}${where}${item.msg}`;
    slot.closest(".field")?.classList.add("invalid");
  }
}

export async function submitPage(view) {
  const fleet = await call("GET", "/v1/fleet");
  const el = form(fleet.models);
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    el.querySelectorAll(".error").forEach((slot) => { slot.textContent = ""; });
    el.querySelectorAll(".invalid").forEach((f) => f.classList.remove("invalid"));
    const data = new FormData(el);
    const file = data.get("prompts");
    try {
      if (file && file.size) {
        const batch = await call("POST", "/v1/batches", { prompts: promptsOf(await file.text()), params: params(data) });
        location.hash = `#/batches/${batch.id}`;
      } else {
        const job = await call("POST", "/v1/jobs", { prompt: data.get("prompt"), ...params(data) });
        location.hash = `#/jobs/${job.id}`;
      }
    } catch (error) {
      if (error instanceof Unauthorized) throw error;  // the page asks for a key (app.js)
      showErrors(el, error);
    }
  });
  replace(view, h("h2", {}, "Generate"), el);
}
