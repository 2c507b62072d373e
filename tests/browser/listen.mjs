// The page's Listen button in headless Chromium, with a fake microphone
// playing WAV (a recording of an indexed item, looped by Chromium):
//   node listen.mjs BASE_URL SCREENSHOT WAV LIBRARY EXPECTED_NAME
// picks LIBRARY, clicks Listen, waits for "now playing: EXPECTED_NAME",
// clicks Stop, waits for the timeline entry and the summary, saves a
// screenshot, then listens in a spectral-v1 library and reads its error. Prints one JSON document of what it saw; exits 1 on failure.
import { chromium } from "playwright-core";

const [base, screenshot, wav, library, expected] = process.argv.slice(2);
const seen = {};
const errors = [];
const consoleErrors = [];
const sockets = [];
let page;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", `--use-file-for-fake-audio-capture=${wav}`],
});
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  await context.grantPermissions(["microphone"], { origin: base });
  page = await context.newPage();
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => message.type() === "error" && consoleErrors.push(message.text()));
  page.on("websocket", (ws) => {
    const entry = { url: new URL(ws.url()).pathname, received: 0, sent_frames: 0, sent_text: [] };
    sockets.push(entry);
    ws.on("framesent", (frame) => (typeof frame.payload === "string" ? entry.sent_text.push(frame.payload) : entry.sent_frames++));
    ws.on("framereceived", () => entry.received++);
    ws.on("close", () => (entry.closed = true));
  });
  // A library the Listen button cannot follow: not a landmark fingerprint.
  const other = await page.request.post(`${base}/v1/libraries`, { data: { name: "textures", model: "spectral-v1" } });
  if (!other.ok()) throw new Error(`creating library textures: ${await other.text()}`);
  await page.goto(base + "/");
  await page.waitForFunction((name) => [...document.querySelectorAll("#library option")].some((o) => o.value === name), library);
  await page.selectOption("#library", library);

  await page.click("#listen");
  // Listen's handler awaits the microphone and the audio graph before it enables Stop.
  await page.waitForFunction(() => !document.querySelector("#stop").disabled, null, { timeout: 30_000 });
  seen.stop_enabled = await page.$eval("#stop", (b) => !b.disabled);
  await page.waitForFunction(() => document.querySelector("#now-playing").textContent.startsWith("now playing:"), null, { timeout: 60_000 });
  seen.now_playing = await page.textContent("#now-playing");
  seen.status_listening = await page.textContent("#listen-status");
  await page.screenshot({ path: screenshot.replace(/(\.png)?$/, "-playing.png"), fullPage: true });
  await page.waitForTimeout(3000);
  await page.click("#stop");
  await page.waitForFunction(() => document.querySelector("#timeline li") && document.querySelector("#listen-status").textContent.includes("occurrence"), null, { timeout: 60_000 });
  await page.waitForFunction(() => !document.querySelector("#listen").disabled);
  seen.timeline = await page.$$eval("#timeline li", (items) => items.map((li) => li.textContent));
  seen.status = await page.textContent("#listen-status");
  seen.now_playing_after = await page.textContent("#now-playing");
  seen.expected = expected;
  await page.screenshot({ path: screenshot, fullPage: true });

  // Listening in a library that is not fingerprint-v2: its error, and Listen usable again.
  await page.selectOption("#library", "textures");
  await page.click("#listen");
  await page.waitForFunction(() => document.querySelector("#listen-status").classList.contains("error"), null, { timeout: 30_000 });
  await page.waitForFunction(() => !document.querySelector("#listen").disabled);
  seen.wrong_library = await page.textContent("#listen-status");
  seen.timeline_after_error = await page.$$eval("#timeline li", (items) => items.length);
  seen.sockets = sockets;
  seen.page_errors = errors;
  seen.console_errors = consoleErrors;
  console.log(JSON.stringify(seen));
} catch (error) {
  const status = page ? await page.textContent("#listen-status").catch(() => "") : "";
  console.log(JSON.stringify({ ...seen, failure: String(error), status, sockets, errors, consoleErrors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
