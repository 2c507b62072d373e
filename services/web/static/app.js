// The web page: plain ES modules, no build step. It talks only to the
// HTTP/JSON API of this server (/v1/...), the same one /docs describes.
// Each action reports beside itself (report(id, ...)), never in another's place.

import { $, api, modelNote, onTokenChange, report, setModelNotes } from "./api.js";
import { loadItems } from "./items.js";
import { clearResults, showResults, similarUrl } from "./results.js";
import { uploadFiles } from "./uploads.js";
import * as waveform from "./waveform.js";

let libraries = [];
const actions = { similar: moreLike, remove: deleteItem };

// --- libraries ---------------------------------------------------------

// What the chosen library's model, or the model for a new one, is for.
function showModel(select, note) {
  const chosen = libraries.find((l) => l.name === $("library").value) || {};
  const model = select === "library" ? chosen.model : $("new-model").value;
  const what = select === "library" ? `Uses ${model}` : `A new library on ${model}`;
  $(note).textContent = model ? `${what}: ${modelNote(model).purpose}` : "";
}

async function loadLibraries(select = "") {
  const [listed, stats] = await Promise.all([api("/v1/libraries"), api("/v1/stats")]);
  libraries = listed.libraries;
  setModelNotes(stats.models);
  const choice = $("library");
  const previous = select || choice.value;
  choice.replaceChildren(...libraries.map((lib) => new Option(`${lib.name} (${lib.model})`, lib.name)));
  if (libraries.some((lib) => lib.name === previous)) choice.value = previous;
  $("delete-library").disabled = !libraries.length;
  const models = $("new-model");
  if (!models.options.length) {
    for (const model of stats.models) {
      const isDefault = model.name === stats.default_model;
      const option = new Option(model.available ? model.name : `${model.name} (unavailable)`, model.name, isDefault, isDefault);
      option.disabled = !model.available;
      option.title = model.available ? modelNote(model.name).purpose : model.unavailable_reason;
      models.add(option);
    }
  }
  showModel("new-model", "new-model-note");
  await libraryChanged();
}

// A new library: its items, and no results of the previous one.
async function libraryChanged() {
  clearSearch();
  report("status", "");
  report("library-status", "");
  showModel("library", "library-model-note");
  await loadItems($("library").value, actions);
}

$("library").addEventListener("change", () => libraryChanged());
$("new-model").addEventListener("change", () => showModel("new-model", "new-model-note"));

$("create-library").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("new-library").value.trim();
  report("create-status", "");
  try {
    await api("/v1/libraries", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, model: $("new-model").value }),
    });
    $("new-library").value = "";
    await loadLibraries(name);
    report("create-status", `Library ${name} created.`);
  } catch (error) {
    report("create-status", error.message, true);
  }
});

$("delete-library").addEventListener("click", async () => {
  const name = $("library").value;
  if (!name || !confirm(`Delete the library ${name} with all its items? This cannot be undone.`)) return;
  try {
    const { deleted_items: count } = await api(`/v1/libraries/${encodeURIComponent(name)}`, { method: "DELETE" });
    await loadLibraries();
    report("library-status", `Deleted library ${name} and its ${count} items.`);
  } catch (error) {
    report("library-status", error.message, true);
  }
});

// --- items -------------------------------------------------------------

async function deleteItem(item, nodes) {
  if (!confirm(`Delete ${item.name} from ${item.library}?`)) return;
  const where = nodes[0].closest("#results") ? "status" : "items-error";
  try {
    await api(`/v1/items/${item.id}`, { method: "DELETE" });
    for (const node of nodes) node.remove();
    document.querySelectorAll(`[data-item-id="${item.id}"]`).forEach((node) => node.remove());
    report(where, `Deleted ${item.name}.`);
  } catch (error) {
    report(where, error.message, true);
  }
}

$("items-more").addEventListener("click", () => loadItems($("library").value, actions, true));

$("upload").addEventListener("click", async () => {
  const library = $("library").value;
  await uploadFiles(library, [...$("files").files], splitTags($("upload-tags").value));
  await loadItems(library, actions);
});

// --- search ------------------------------------------------------------

function splitTags(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

function filters() {
  return { topK: $("top-k").value, minScore: $("min-score").value.trim(), tags: splitTags($("filter-tags").value) };
}

// No results and no query waveform: before a search, after a failed one, on a library switch.
function clearSearch() {
  clearResults();
  waveform.clear($("query-wave"));
  $("query-view").hidden = true;
}

function announce(results, response, what) {
  const count = results.length === 1 ? "1 match" : `${results.length} matches`;
  const threshold = response.min_score ? ` (score ≥ ${Number(response.min_score).toFixed(3)})` : "";
  report("status", results.length ? `${count} ${what}${threshold}.` : `No match ${what}${threshold}.`);
}

async function search(file) {
  const library = $("library").value;
  clearSearch();
  if (!library) {
    report("status", "Pick or create a library first.", true);
    return;
  }
  $("query-view").hidden = false;
  $("query-name").textContent = `Query: ${file.name}`;
  $("query-wave").hidden = false;
  const bytes = await file.arrayBuffer();
  const drawn = waveform
    .decode(bytes.slice(0))
    .then((audio) => waveform.draw($("query-wave"), audio))
    .catch(() => {}); // not audio the browser decodes: the search says what it is
  report("status", `Searching ${library}…`);
  const form = new FormData();
  const { topK, minScore, tags } = filters();
  form.append("file", file, file.name);
  form.append("top_k", topK);
  if (minScore !== "") form.append("min_score", minScore);
  for (const tag of tags) form.append("tags", tag);
  try {
    const response = await api(`/v1/libraries/${encodeURIComponent(library)}/search`, { method: "POST", body: form });
    showResults(response.results, response, actions);
    announce(response.results, response, `in ${library}`);
  } catch (error) {
    await drawn; // then cleared: not drawn after the error
    clearSearch();
    report("status", error.message, true);
  }
}

async function moreLike(item) {
  clearSearch();
  $("query-view").hidden = false;
  $("query-name").textContent = `More like ${item.name} (#${item.id}), from ${item.library}`;
  $("query-wave").hidden = true;
  report("status", `Looking for recordings like ${item.name}…`);
  try {
    const response = await api(similarUrl(item, filters()));
    showResults(response.results, response, actions);
    announce(response.results, response, `like ${item.name}`);
  } catch (error) {
    clearSearch();
    report("status", error.message, true);
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) search(event.dataTransfer.files[0]);
});
$("query").addEventListener("change", () => {
  if ($("query").files.length) search($("query").files[0]);
  $("query").value = ""; // the same file again is a new search
});

const start = () => loadLibraries().catch((error) => report("library-status", `Cannot reach the API: ${error.message}`, true));
onTokenChange(start);
start();
