// Drives the web page in headless Chromium, as a person would:
//   node page.mjs BASE_URL SCREENSHOT QUERY BAD_FILE FILE...
// checks the client-side name check, uploads BAD_FILE (its error must show
// under Upload), uploads FILEs into a new library, pages through its items,
// edits the tags of one item (adds, removes, a bad tag's error),
// searches with QUERY (an excerpt of the first FILE), checks the source
// ranks first with its whole waveform and the match marked, plays it from
// the match, asks for more like it, fails a search, switches library,
// deletes the match and a library, and saves screenshots (SCREENSHOT, and
// SCREENSHOT with -items / -error before its extension). Prints one JSON
// document of what it saw; exits 1 on failure.
import { chromium } from "playwright-core";
import path from "node:path";

const [base, screenshot, query, bad, ...files] = process.argv.slice(2);
const expected = path.basename(files[0]); // the query is an excerpt of the first file
const shot = (suffix) => screenshot.replace(/(\.png)?$/, `-${suffix}.png`);
const seen = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // The machine has no network beyond loopback: keep Chromium from trying.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  const consoleErrors = [];
  const failedLoads = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    // Chromium logs every 4xx answer to fetch or XHR too: the test provokes two (failedLoads says which).
    consoleErrors.push(message.text());
  });
  page.on("response", (response) => {
    const url = new URL(response.url());
    if (response.status() >= 400) failedLoads.push(`${response.status()} ${response.request().method()} ${url.pathname}`);
  });
  page.on("dialog", (dialog) => dialog.accept()); // the delete confirmations
  // A second library, to switch to and to delete.
  const other = await page.request.post(`${base}/v1/libraries`, { data: { name: "other", model: "spectral-v1" } });
  if (!other.ok()) throw new Error(`creating library other: ${await other.text()}`);
  await page.goto(base + "/?page_size=2"); // two items a page, to see paging

  // The client-side name check works: a bad name never reaches the API.
  await page.fill("#new-library", "Bad Name!");
  await page.click("#create-library button");
  seen.bad_name_blocked = await page.$eval("#new-library", (e) => e.validity.patternMismatch && !e.checkValidity());
  seen.model_note = await page.textContent("#new-model-note");

  // A new library, through the form.
  await page.fill("#new-library", "browser");
  await page.click("#create-library button");
  await page.waitForFunction(() => document.querySelector("#library").value === "browser");
  seen.library_note = await page.textContent("#library-model-note");

  // A file that is not audio: its error shows under Upload, not under Search.
  await page.setInputFiles("#files", [bad]);
  await page.click("#upload");
  await page.waitForFunction(() => document.querySelector("#uploads li")?.dataset.phase === "failed");
  seen.bad_upload = await page.$eval("#uploads li", (r) => ({
    note: r.querySelector(".note").textContent, phases: r.dataset.phases, progress: r.querySelector("progress").value,
  }));
  seen.upload_status = await page.textContent("#upload-status");
  seen.search_status_after_bad_upload = await page.textContent("#status");
  await page.screenshot({ path: shot("error"), fullPage: true });

  // Three real sounds at once, tagged, each with its progress bar.
  await page.setInputFiles("#files", files);
  await page.fill("#upload-tags", "demo, loops");
  await page.click("#upload");
  await page.waitForFunction((n) => [...document.querySelectorAll("#uploads li")].filter(
    (r) => r.dataset.phase === "done").length === n, files.length);
  seen.uploads = await page.$$eval("#uploads li", (rows) => rows.map((r) => r.textContent.trim()));
  seen.phases = await page.$$eval("#uploads li", (rows) => rows.map((r) => r.dataset.phases));
  seen.progress = await page.$$eval("#uploads progress", (bars) => bars.map((b) => b.value));

  // Paging: two items, then the rest behind "More items".
  await page.click("#items-view summary");
  await page.waitForFunction(() => document.querySelectorAll("#items li").length === 2);
  seen.more_visible = await page.isVisible("#items-more");
  await page.click("#items-more");
  await page.waitForFunction((n) => document.querySelectorAll("#items li").length === n, files.length);
  seen.items = await page.$$eval("#items li .label", (rows) => rows.map((r) => r.textContent));
  seen.more_after = await page.isVisible("#items-more");
  seen.item_tags = await page.$eval("#items li .tags", (e) => e.textContent);
  await page.screenshot({ path: shot("items"), fullPage: true });

  // Editing tags of an item (not the one searched for below): add one, see
  // it shown; remove one by its ×; a bad tag's error shows beside the field.
  const edited = page.locator("#items li", { hasNotText: expected }).first();
  await edited.locator(".add-tag input").fill("Edited Tag");
  await edited.locator(".add-tag button").click();
  await edited.locator(".tag", { hasText: "edited tag" }).waitFor();
  seen.tag_added = await edited.locator(".tags").textContent();
  await edited.locator(".tag", { hasText: "loops" }).locator(".untag").click();
  await page.waitForFunction(
    (itemId) => !document.querySelector(`#items li[data-item-id="${itemId}"] .tags`).textContent.includes("loops"),
    await edited.getAttribute("data-item-id"));
  seen.tag_removed = await edited.locator(".tags").textContent();
  await edited.locator(".add-tag input").fill("   ");
  await edited.locator(".add-tag button").click();
  await edited.locator(".tag-error:not(:empty)").waitFor();
  seen.tag_error = await edited.locator(".tag-error").textContent();
  const editedId = await edited.getAttribute("data-item-id");
  seen.tag_api_id = editedId;
  seen.tag_api = (await (await page.request.get(`${base}/v1/items/${editedId}`)).json()).item.user_tags;

  // Search with an excerpt.
  await page.setInputFiles("#query", query);
  await page.waitForSelector("#results .result");
  const first = page.locator("#results .result").first();
  seen.first = await first.locator(".name").textContent();
  seen.meta = await first.locator(".meta").textContent();
  seen.score = await first.locator(".score").textContent();
  seen.score_note = await first.locator(".score-note").textContent();
  seen.tags = await first.locator(".item-tags").textContent();
  seen.range = await first.locator(".meta").evaluate((e) => [Number(e.dataset.start), Number(e.dataset.end)]);
  seen.results = await page.locator("#results .result").count();
  seen.status = await page.textContent("#status");
  if (seen.first !== expected) throw new Error(`expected ${expected} first, got ${seen.first}`);

  // The whole item is drawn, the match marked; the player has the whole
  // recording and starts at the match.
  await page.waitForFunction(() => document.querySelector("#results .result .overview").dataset.marked);
  seen.marked = await first.locator(".overview").evaluate((e) => e.dataset.marked.split("-").map(Number));
  await page.waitForFunction(() => document.querySelector("#results .result .player").readyState >= 1);
  await first.locator(".play").click();
  await page.waitForFunction(() => document.querySelector("#results .result .player").dataset.startedAt);
  seen.player = await first.locator(".player").evaluate((a) => ({
    source: a.dataset.source, duration: a.duration, started_at: Number(a.dataset.startedAt),
  }));
  await page.waitForFunction(() => document.querySelector("#query-wave").dataset.drawn === "true");
  await page.waitForFunction(() => document.querySelector("#results .result .wave").dataset.drawn === "true");
  await first.locator(".player").evaluate((a) => a.pause());
  await page.screenshot({ path: screenshot, fullPage: true });

  // A tag filter no item has: no match.
  await page.fill("#filter-tags", "no-such-tag");
  await page.setInputFiles("#query", query);
  await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("No match"));
  seen.filtered_results = await page.locator("#results .result").count();
  await page.fill("#filter-tags", "");

  // More like this, from the items list: the other items, not itself.
  const tabla = page.locator("#items li", { hasText: expected });
  await tabla.locator(".similar").click();
  await page.waitForFunction(() => {
    const status = document.querySelector("#status").textContent;
    return status.includes("like") && !status.endsWith("…");
  });
  seen.similar_status = await page.textContent("#status");
  seen.similar = await page.$$eval("#results .result .name", (names) => names.map((n) => n.textContent));

  // A failed search: the error shows under Search, the previous query's waveform and results are gone.
  await page.setInputFiles("#query", query);
  await page.waitForSelector("#results .result");
  await page.waitForFunction(() => document.querySelector("#query-wave").dataset.drawn === "true");
  await page.setInputFiles("#query", bad);
  await page.waitForFunction(() => document.querySelector("#status").classList.contains("error"));
  seen.failed_search = {
    status: await page.textContent("#status"),
    wave_drawn: await page.$eval("#query-wave", (c) => c.dataset.drawn || ""),
    query_hidden: await page.$eval("#query-view", (v) => v.hidden),
    results: await page.locator("#results .result").count(),
    upload_status: await page.textContent("#upload-status"),
  };

  // Switching library clears the results.
  await page.setInputFiles("#query", query);
  await page.waitForSelector("#results .result");
  await page.selectOption("#library", "other");
  await page.waitForFunction(() => document.querySelectorAll("#items li").length === 0);
  seen.after_switch = {
    results: await page.locator("#results .result").count(),
    query_hidden: await page.$eval("#query-view", (v) => v.hidden),
  };

  // Delete the library "other", confirmed.
  await page.click("#delete-library");
  await page.waitForFunction(() => document.querySelector("#library-status").textContent.startsWith("Deleted library"));
  seen.library_deleted = await page.textContent("#library-status");
  seen.libraries_left = await page.$$eval("#library option", (options) => options.map((o) => o.value));

  // Delete the match: gone from the page and from the API.
  await page.setInputFiles("#query", query);
  await page.waitForSelector("#results .result");
  const id = await first.getAttribute("data-item-id");
  await first.locator(".delete").click();
  await page.waitForFunction((itemId) => !document.querySelector(`#results .result[data-item-id="${itemId}"]`), id);
  seen.deleted = id;
  // The library's list (its first page, after the switches) lost it too.
  seen.items_left = await page.$$eval("#items li", (rows) => rows.map((r) => r.dataset.itemId));
  seen.after_delete_status = (await page.request.get(`${base}/v1/items/${id}`)).status();
  seen.page_errors = errors;
  seen.console_errors = consoleErrors;
  seen.failed_loads = failedLoads;
  // The API's documentation renders, from assets this server ships, with an Authorize button.
  await page.goto(base + "/docs");
  await page.waitForSelector(".swagger-ui .info .title");
  seen.docs_title = (await page.locator(".swagger-ui .info .title").textContent()).trim();
  seen.docs_operations = await page.locator(".opblock").count();
  seen.docs_authorize = await page.locator(".swagger-ui .btn.authorize").count();
  seen.page_errors = errors;
  console.log(JSON.stringify(seen));
} catch (error) {
  console.log(JSON.stringify({ ...seen, failure: String(error) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
