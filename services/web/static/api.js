// The HTTP/JSON API of this server (/v1/...), the same one /docs describes,
// and the few helpers every part of the page shares.

export const $ = (id) => document.getElementById(id);

// A bearer token, when the gateway wants one: kept for this tab only.
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("audiosearch-token") || "";

export function token() {
  return tokenInput.value.trim();
}

export function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

export function onTokenChange(callback) {
  tokenInput.addEventListener("change", () => {
    sessionStorage.setItem("audiosearch-token", tokenInput.value.trim());
    callback();
  });
}

// Every API error is JSON: {"error": {"code", "message", "http_status"}}.
export async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || response.statusText}`);
  }
  return body;
}

// A message beside the action it is about: `where` is the id of its element.
export function report(where, text, isError = false) {
  const node = $(where);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

export function seconds(value) {
  return `${Number(value || 0).toFixed(1)} s`;
}

// What each model is for, and what its score means: the embedder's words,
// as GET /v1/stats gives them (each model's purpose and score_meaning).
let modelNotes = {};
export function setModelNotes(models) {
  modelNotes = Object.fromEntries(
    (models || []).map((m) => [m.name, { purpose: m.purpose || "", score: m.score_meaning || "" }]),
  );
}
export function modelNote(model) {
  return modelNotes[model] || { purpose: "", score: "" };
}

// An item's tags, user ones then automatic ones with their score.
export function tagList(item) {
  const list = document.createElement("span");
  list.className = "tags";
  for (const tag of item.user_tags || []) {
    const chip = document.createElement("span");
    chip.className = "tag";
    chip.textContent = tag;
    chip.title = "user tag";
    list.append(chip);
  }
  for (const tag of item.auto_tags || []) {
    const chip = document.createElement("span");
    chip.className = "tag auto";
    chip.textContent = `${tag.label} ${Math.round(Number(tag.score) * 100)}%`;
    chip.title = "automatic tag (the model's confidence)";
    list.append(chip);
  }
  if (!list.children.length) list.textContent = "no tags";
  return list;
}
