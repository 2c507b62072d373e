// The library's items, a page at a time (next_page_token), each with its
// tags (editable: services/web/static/tags.js), "More like this" and Delete.

import { $, api, report, seconds } from "./api.js";
import { editableTags } from "./tags.js";

// Items per page; ?page_size=N in the page's address changes it.
const PAGE_SIZE = Number(new URLSearchParams(location.search).get("page_size")) || 50;
let nextToken = "";

export async function loadItems(library, actions, more = false) {
  const list = $("items");
  const button = $("items-more");
  if (!more) {
    list.replaceChildren();
    nextToken = "";
  }
  button.hidden = true;
  report("items-error", "");
  if (!library) return;
  const params = new URLSearchParams({ page_size: PAGE_SIZE, page_token: more ? nextToken : "" });
  try {
    const { items, next_page_token: token } = await api(`/v1/libraries/${encodeURIComponent(library)}/items?${params}`);
    if ($("library").value !== library) return; // switched meanwhile
    for (const item of items) list.append(itemRow(item, actions));
    nextToken = token;
    button.hidden = !token;
    $("items-count").textContent = `${list.children.length}${token ? "+" : ""}`;
  } catch (error) {
    report("items-error", error.message, true);
  }
}

function itemRow(item, actions) {
  const row = document.createElement("li");
  row.dataset.itemId = item.id;
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = `${item.name} (${seconds(item.duration_seconds)}) #${item.id}`;
  const similar = document.createElement("button");
  similar.textContent = "More like this";
  similar.className = "similar";
  similar.addEventListener("click", () => actions.similar(item));
  const remove = document.createElement("button");
  remove.textContent = "Delete";
  remove.className = "delete";
  remove.addEventListener("click", () => actions.remove(item, [row]));
  row.append(label, editableTags(item), similar, remove);
  return row;
}
