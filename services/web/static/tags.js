// An item's tags, editable: a × on each user tag removes it, the field
// beside them adds one (PATCH /v1/items/{id}); automatic tags are shown
// as they are. An error shows beside the field.

import { api, tagList } from "./api.js";

export function editableTags(item) {
  const box = document.createElement("span");
  box.className = "tag-editor";
  render(box, item);
  return box;
}

function render(box, item) {
  const list = tagList(item);
  for (const chip of list.querySelectorAll(".tag:not(.auto)")) {
    const tag = chip.textContent;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "untag";
    remove.title = `remove the tag ${tag}`; // shows a × (style.css): the chip's text stays the tag
    remove.setAttribute("aria-label", remove.title);
    remove.addEventListener("click", () => change(box, item, { remove_tags: [tag] }));
    chip.append(remove);
  }
  const form = document.createElement("form");
  form.className = "add-tag";
  const input = document.createElement("input");
  input.placeholder = "add a tag";
  input.setAttribute("aria-label", `add a tag to ${item.name}`);
  input.required = true;
  const add = document.createElement("button");
  add.textContent = "Add tag";
  form.append(input, add);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    change(box, item, { add_tags: [input.value] });
  });
  const error = document.createElement("span");
  error.className = "tag-error error";
  error.setAttribute("role", "status");
  box.replaceChildren(list, form, error);
}

async function change(box, item, body) {
  const error = box.querySelector(".tag-error");
  error.textContent = "";
  try {
    const { item: updated } = await api(`/v1/items/${item.id}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    render(box, updated);
  } catch (failure) {
    error.textContent = failure.message;
  }
}
