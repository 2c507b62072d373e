// Uploads, several at once, each with its progress: the bytes going up
// (half the bar at most), then indexing (the bar runs without a value:
// the gateway answers once the item is searchable), then done (full) or
// failed (empty, in red). row.dataset.phases records the sequence.

import { $, authHeaders, report } from "./api.js";

function phase(row, name, note) {
  row.dataset.phase = name;
  row.dataset.phases = row.dataset.phases ? `${row.dataset.phases},${name}` : name;
  row.querySelector(".note").textContent = note;
  row.classList.toggle("failed", name === "failed");
}

function upload(file, library, tags, row) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("file", file, file.name);
    for (const tag of tags) form.append("tags", tag);
    const request = new XMLHttpRequest(); // fetch has no upload progress
    const bar = row.querySelector("progress");
    const fail = (message) => {
      bar.value = 0;
      phase(row, "failed", `failed: ${message}`);
      row.querySelector(".note").classList.add("error");
      resolve(false);
    };
    phase(row, "uploading", "uploading…");
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) bar.value = (0.5 * event.loaded) / event.total;
    };
    request.upload.onload = () => {
      bar.removeAttribute("value"); // indeterminate: indexing takes as long as it takes
      phase(row, "indexing", "indexing…");
    };
    request.onload = () => {
      let body = {};
      try {
        body = JSON.parse(request.responseText || "{}");
      } catch {
        body = { error: { message: `HTTP ${request.status}` } }; // a proxy's HTML page, say
      }
      if (request.status !== 200) {
        fail(body.error ? body.error.message : `HTTP ${request.status}`);
        return;
      }
      bar.value = 1;
      phase(row, "done", body.created ? `added as #${body.item.id}` : `already there as #${body.item.id}`);
      resolve(true);
    };
    request.onerror = () => fail("network error");
    request.open("POST", `/v1/libraries/${encodeURIComponent(library)}/items`);
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.send(form);
  });
}

// Uploads the chosen files, three at a time; resolves when all have ended.
export async function uploadFiles(library, files, tags) {
  report("upload-status", "");
  if (!library || !files.length) {
    report("upload-status", "Pick a library and one or more files first.", true);
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
  let next = 0;
  let ok = 0;
  async function worker() {
    while (next < files.length) {
      const i = next++;
      if (await upload(files[i], library, tags, rows[i])) ok++;
    }
  }
  await Promise.all([worker(), worker(), worker()]);
  report("upload-status", `${ok} of ${files.length} added to ${library}.`, ok < files.length);
}
