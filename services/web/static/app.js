// The web page: plain ES module, no build step. It talks only to the
// HTTP/JSON API of this server (/v1/...), the same one /docs describes.

const $ = (id) => document.getElementById(id);
const audioContext = new AudioContext();

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// A bearer token, when the gateway wants one: kept for this tab only.
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("audiosearch-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("audiosearch-token", tokenInput.value.trim());
  loadLibraries().catch((error) => setStatus(error.message, true));
});
function authHeaders() {
  const token = tokenInput.value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// Every API error is JSON: {"error": {"code", "message", "http_status"}}.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || response.statusText}`);
  }
  return body;
}

function seconds(value) {
  return `${Number(value).toFixed(1)} s`;
}

// --- libraries ---------------------------------------------------------

async function loadLibraries(select = "") {
  const [{ libraries }, stats] = await Promise.all([api("/v1/libraries"), api("/v1/stats")]);
  const choice = $("library");
  const previous = select || choice.value;
  choice.replaceChildren(
    ...libraries.map((lib) => new Option(`${lib.name} (${lib.model})`, lib.name)),
  );
  if (libraries.some((lib) => lib.name === previous)) choice.value = previous;
  await loadItems();
  const models = $("new-model");
  if (!models.options.length) {
    for (const model of stats.models.filter((m) => m.available)) {
      models.add(new Option(model.name, model.name, model.name === stats.default_model, model.name === stats.default_model));
    }
  }
}

// The library's items, each with a delete button.
async function loadItems() {
  const library = $("library").value;
  const list = $("items");
  list.replaceChildren();
  if (!library) return;
  const { items } = await api(`/v1/libraries/${encodeURIComponent(library)}/items?page_size=1000`);
  for (const item of items) {
    const row = document.createElement("li");
    row.dataset.itemId = item.id;
    const label = document.createElement("span");
    label.textContent = `${item.name} (${seconds(item.duration_seconds)}) #${item.id} `;
    const remove = document.createElement("button");
    remove.textContent = "Delete";
    remove.addEventListener("click", () => deleteItem(item, [row]));
    row.append(label, remove);
    list.append(row);
  }
}

async function deleteItem(item, nodes) {
  if (!confirm(`Delete ${item.name} from ${item.library}?`)) return;
  try {
    await api(`/v1/items/${item.id}`, { method: "DELETE" });
    for (const node of nodes) node.remove();
    document.querySelectorAll(`[data-item-id="${item.id}"]`).forEach((node) => node.remove());
    setStatus(`Deleted ${item.name}.`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

$("library").addEventListener("change", () => loadItems().catch((error) => setStatus(error.message, true)));

$("create-library").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("new-library").value.trim();
  try {
    await api("/v1/libraries", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, model: $("new-model").value }),
    });
    $("new-library").value = "";
    await loadLibraries(name);
    setStatus(`Library ${name} created.`);
  } catch (error) {
    setStatus(error.message, true);
  }
});

// --- uploads, several at once, each with its progress ------------------

function upload(file, library, row) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("file", file, file.name);
    const request = new XMLHttpRequest(); // fetch has no upload progress
    const bar = row.querySelector("progress");
    const note = row.querySelector(".note");
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) bar.value = event.loaded / event.total;
    };
    request.onload = () => {
      let body = {};
      try {
        body = JSON.parse(request.responseText || "{}");
      } catch {
        body = { error: { message: `HTTP ${request.status}` } }; // a proxy's HTML page, say
      }
      if (request.status === 200) {
        bar.value = 1;
        note.textContent = body.created ? `added as #${body.item.id}` : `already there as #${body.item.id}`;
      } else {
        note.textContent = `failed: ${body.error ? body.error.message : request.status}`;
        note.className = "note error";
      }
      resolve(request.status === 200);
    };
    request.onerror = () => {
      note.textContent = "failed: network error";
      note.className = "note error";
      resolve(false);
    };
    request.open("POST", `/v1/libraries/${encodeURIComponent(library)}/items`);
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.send(form);
  });
}

$("upload").addEventListener("click", async () => {
  const library = $("library").value;
  const files = [...$("files").files];
  if (!library || !files.length) {
    setStatus("Pick a library and one or more files first.", true);
    return;
  }
  const list = $("uploads");
  list.replaceChildren();
  const rows = files.map((file) => {
    const row = document.createElement("li");
    row.innerHTML = `<span class="file"></span><progress max="1" value="0"></progress> <span class="note"></span>`;
    row.querySelector(".file").textContent = file.name;
    list.append(row);
    return row;
  });
  // Three at a time: parallel enough, without hundreds of open uploads.
  let next = 0;
  let ok = 0;
  async function worker() {
    while (next < files.length) {
      const i = next++;
      if (await upload(files[i], library, rows[i])) ok++;
    }
  }
  await Promise.all([worker(), worker(), worker()]);
  setStatus(`${ok} of ${files.length} uploaded to ${library}.`, ok < files.length);
  await loadItems().catch(() => {});
});

// --- waveforms ---------------------------------------------------------

async function drawWaveform(canvas, arrayBuffer) {
  const audio = await audioContext.decodeAudioData(arrayBuffer);
  const samples = audio.getChannelData(0);
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.fillStyle = "#2a6fdb";
  const step = Math.max(1, Math.floor(samples.length / width));
  for (let x = 0; x < width; x++) {
    let low = 1;
    let high = -1;
    for (let i = x * step; i < Math.min(samples.length, (x + 1) * step); i++) {
      low = Math.min(low, samples[i]);
      high = Math.max(high, samples[i]);
    }
    if (low > high) break;
    context.fillRect(x, ((1 - high) / 2) * height, 1, Math.max(1, ((high - low) / 2) * height));
  }
  canvas.dataset.drawn = "true";
  return audio.duration;
}

// --- search ------------------------------------------------------------

async function search(file) {
  const library = $("library").value;
  if (!library) {
    setStatus("Pick or create a library first.", true);
    return;
  }
  $("query-view").hidden = false;
  $("query-name").textContent = `Query: ${file.name}`;
  drawWaveform($("query-wave"), await file.arrayBuffer()).catch(() => {});
  setStatus(`Searching ${library}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("top_k", $("top-k").value);
  try {
    const { results } = await api(`/v1/libraries/${encodeURIComponent(library)}/search`, { method: "POST", body: form });
    showResults(results);
    const count = results.length === 1 ? "1 match" : `${results.length} matches`;
    setStatus(results.length ? `${count} in ${library}.` : `No match in ${library}.`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

function showResults(results) {
  const list = $("results");
  list.replaceChildren();
  results.forEach((result, i) => {
    const node = $("result-template").content.firstElementChild.cloneNode(true);
    const { item, item_range: range, query_range: query } = result;
    node.dataset.itemId = item.id;
    node.querySelector(".rank").textContent = `#${i + 1}`;
    node.querySelector(".name").textContent = item.name;
    // A landmark model (fingerprint-v2) scores by confidence and estimates the copy's speed and pitch.
    const played = result.speed
      ? ` · played ×${Number(result.speed).toFixed(3)}, pitch ×${Number(result.pitch).toFixed(3)}`
      : "";
    node.querySelector(".score").textContent =
      (result.speed ? `confidence ${Number(result.score).toFixed(3)}` : `score ${Number(result.score).toFixed(3)}`) + played;
    node.querySelector(".meta").textContent =
      `matches ${seconds(range.start_seconds)}–${seconds(range.end_seconds)} of ${seconds(item.duration_seconds)}` +
      ` (query ${seconds(query.start_seconds)}–${seconds(query.end_seconds)}) · ${item.library} #${item.id}`;
    node.querySelector(".meta").dataset.start = range.start_seconds;
    node.querySelector(".meta").dataset.end = range.end_seconds;
    const segment = `/v1/items/${item.id}/audio?start=${range.start_seconds}&end=${range.end_seconds}`;
    const player = node.querySelector(".player");
    node.querySelector(".play").addEventListener("click", async () => {
      if (!player.dataset.segment) {
        // An audio element cannot send a token: with one, fetch the segment and play it from memory.
        const token = authHeaders();
        player.src = token.Authorization
          ? URL.createObjectURL(await (await fetch(segment, { headers: token })).blob())
          : segment;
        player.dataset.segment = segment;
      }
      player.currentTime = 0;
      player.play().catch(() => {}); // headless browsers may refuse to output sound
    });
    fetch(segment, { headers: authHeaders() })
      .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(r.statusText))))
      .then((buffer) => drawWaveform(node.querySelector(".wave"), buffer))
      .catch(() => {});
    node.querySelector(".delete").addEventListener("click", () => deleteItem(item, [node]));
    list.append(node);
  });
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
});

loadLibraries().catch((error) => setStatus(`Cannot reach the API: ${error.message}`, true));
