// Drives the web page in headless Chromium, as a person would:
//   node page.mjs BASE_URL SCREENSHOT QUERY FILE...
// uploads FILEs into a new library, searches with QUERY, checks the source
// ranks first with its time range, plays the match, deletes it, and saves
// a screenshot. Prints one JSON document of what it saw; exits 1 on failure.
import { chromium } from "playwright-core";
import path from "node:path";

const [base, screenshot, query, ...files] = process.argv.slice(2);
const expected = path.basename(files[0]); // the query is an excerpt of the first file
const seen = {};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // The machine has no network beyond loopback: keep Chromium from trying.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("dialog", (dialog) => dialog.accept()); // the delete confirmation
  await page.goto(base + "/");

  // A new library, through the form.
  await page.fill("#new-library", "browser");
  await page.click("#create-library button");
  await page.waitForFunction(() => document.querySelector("#library").value === "browser");

  // Three real sounds at once, each with its progress bar.
  await page.setInputFiles("#files", files);
  await page.click("#upload");
  await page.waitForFunction((n) => document.querySelectorAll("#uploads li .note").length === n &&
    [...document.querySelectorAll("#uploads li .note")].every((e) => e.textContent.startsWith("added as")), files.length);
  seen.uploads = await page.$$eval("#uploads li", (rows) => rows.map((r) => r.textContent.trim()));
  seen.progress = await page.$$eval("#uploads progress", (bars) => bars.map((b) => b.value));
  await page.waitForFunction((n) => document.querySelectorAll("#items li").length === n, files.length);

  // Search with an excerpt.
  await page.setInputFiles("#query", query);
  await page.waitForSelector("#results .result");
  const first = page.locator("#results .result").first();
  seen.first = await first.locator(".name").textContent();
  seen.meta = await first.locator(".meta").textContent();
  seen.range = await first.locator(".meta").evaluate((e) => [Number(e.dataset.start), Number(e.dataset.end)]);
  seen.results = await page.locator("#results .result").count();
  if (seen.first !== expected) throw new Error(`expected ${expected} first, got ${seen.first}`);

  // Play: the audio element loads the segment of the match.
  await first.locator(".play").click();
  await page.waitForFunction(() => {
    const audio = document.querySelector("#results .result .player");
    return audio && audio.readyState >= 2 && audio.duration > 0;
  });
  seen.player = await first.locator(".player").evaluate((a) => ({ src: a.currentSrc, duration: a.duration }));
  await page.waitForFunction(() => document.querySelector("#query-wave").dataset.drawn === "true");
  await page.waitForFunction(() => document.querySelector("#results .result .wave").dataset.drawn === "true");

  await page.screenshot({ path: screenshot, fullPage: true });

  // Delete the match: gone from the page and from the API.
  const id = await first.getAttribute("data-item-id");
  await first.locator(".delete").click();
  await page.waitForFunction((itemId) => !document.querySelector(`#results .result[data-item-id="${itemId}"]`), id);
  seen.deleted = id;
  seen.items_left = await page.locator("#items li").count(); // the library's list lost it too
  seen.after_delete_status = (await page.request.get(`${base}/v1/items/${id}`)).status();
  // The API's documentation renders, from assets this server ships.
  await page.goto(base + "/docs");
  await page.waitForSelector(".swagger-ui .info .title");
  seen.docs_title = (await page.locator(".swagger-ui .info .title").textContent()).trim();
  seen.docs_operations = await page.locator(".opblock").count();
  seen.page_errors = errors;
  console.log(JSON.stringify(seen));
} catch (error) {
  console.log(JSON.stringify({ ...seen, failure: String(error) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
