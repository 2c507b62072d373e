// Search results: each shows the whole item (its waveform with the match
// marked), a player of the full recording that starts at the match, a zoom
// on the matched stretch, the score and what it means for the model, tags.

import { $, authHeaders, modelNote, seconds, tagList } from "./api.js";
import * as waveform from "./waveform.js";

// The gateway cuts at most this much audio in one answer (GetAudioSegment).
const MAX_SEGMENT = 600;

// The stretch of the item to show and play: all of it, or for a long
// recording the longest stretch the gateway cuts, around the match.
function stretch(item, match) {
  const duration = Number(item.duration_seconds);
  if (duration <= MAX_SEGMENT) return { start: 0, end: 0 };
  const middle = (match.start + match.end) / 2;
  const start = Math.min(Math.max(0, middle - MAX_SEGMENT / 2), duration - MAX_SEGMENT);
  return { start, end: start + MAX_SEGMENT };
}

// Also lets go of the recordings the players held.
export function clearResults() {
  for (const player of $("results").querySelectorAll(".player")) {
    const src = player.src;
    if (!src.startsWith("blob:")) continue;
    // Detached first: a player still loading its blob would otherwise
    // report the revoked URL as a failed load.
    player.removeAttribute("src");
    player.load();
    URL.revokeObjectURL(src);
  }
  $("results").replaceChildren();
}

function scoreText(result, response) {
  const note = modelNote(response.model).score;
  // A landmark model estimates the copy's speed and pitch (0 when a model does not).
  const played = result.speed
    ? ` · played ×${Number(result.speed).toFixed(3)}, pitch ×${Number(result.pitch).toFixed(3)}`
    : "";
  return { score: `${response.model} score ${Number(result.score).toFixed(3)}${played}`, note };
}

async function loadAudio(node, item, match) {
  const span = stretch(item, match);
  const url = `/v1/items/${item.id}/audio?start=${span.start}&end=${span.end}`;
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw new Error(`audio: HTTP ${response.status}`);
  const offset = Number(response.headers.get("X-Segment-Start") || span.start);
  const bytes = await response.arrayBuffer();
  // The player gets the bytes as a blob: seekable, and sent with the token already.
  const player = node.querySelector(".player");
  player.src = URL.createObjectURL(new Blob([bytes], { type: "audio/wav" }));
  player.dataset.source = url;
  player.dataset.offset = offset;
  const audio = await waveform.decode(bytes);
  const canvas = node.querySelector(".overview");
  const redraw = () => waveform.overview(canvas, audio, offset, match, offset + player.currentTime);
  waveform.overview(canvas, audio, offset, match);
  waveform.draw(node.querySelector(".wave"), audio, match.start - offset, match.end - offset, "#d97a00");
  player.addEventListener("timeupdate", redraw);
  // A click on the overview plays from there.
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    player.currentTime = ((event.clientX - box.left) / box.width) * audio.duration;
    player.play().catch(() => {});
  });
}

export function showResults(results, response, actions) {
  const list = $("results");
  clearResults();
  results.forEach((result, i) => {
    const node = $("result-template").content.firstElementChild.cloneNode(true);
    const { item, item_range: range, query_range: query } = result;
    const match = { start: Number(range.start_seconds), end: Number(range.end_seconds) };
    node.dataset.itemId = item.id;
    node.querySelector(".rank").textContent = `#${i + 1}`;
    node.querySelector(".name").textContent = item.name;
    const { score, note } = scoreText(result, response);
    node.querySelector(".score").textContent = score;
    node.querySelector(".score-note").textContent = note;
    node.querySelector(".item-tags").append(tagList(item));
    const meta = node.querySelector(".meta");
    meta.textContent =
      `matches ${seconds(match.start)}–${seconds(match.end)} of ${seconds(item.duration_seconds)}` +
      ` (query ${seconds(query.start_seconds)}–${seconds(query.end_seconds)}) · ${item.library} #${item.id}`;
    meta.dataset.start = match.start;
    meta.dataset.end = match.end;
    const player = node.querySelector(".player");
    const problem = node.querySelector(".result-error");
    const loaded = loadAudio(node, item, match).catch((error) => {
      problem.textContent = error.message;
    });
    // Play the full recording from the start of the match.
    node.querySelector(".play").addEventListener("click", async () => {
      await loaded;
      player.currentTime = Math.max(0, match.start - Number(player.dataset.offset || 0));
      player.dataset.startedAt = player.currentTime;
      player.play().catch(() => {}); // headless browsers may refuse to output sound
    });
    node.querySelector(".similar").addEventListener("click", () => actions.similar(item));
    node.querySelector(".delete").addEventListener("click", () => actions.remove(item, [node]));
    list.append(node);
  });
}

// "More like this": the item's neighbours in its library, with the search filters.
export function similarUrl(item, filters) {
  const params = new URLSearchParams({ top_k: filters.topK });
  if (filters.minScore !== "") params.set("min_score", filters.minScore);
  for (const tag of filters.tags) params.append("tags", tag);
  return `/v1/items/${item.id}/similar?${params}`;
}
