// Listen: the microphone, as mono float32 PCM at the AudioContext's rate,
// streamed over the WebSocket /v1/libraries/{library}/monitor/live; each
// event shows as it comes: STARTED as "now playing", ENDED in the timeline.
// Stop ends the audio ("end"), so the occurrence still playing gets its ENDED.

import { $, report, token } from "./api.js";

let session = null;

function clock(value) {
  const s = Math.max(0, Math.round(Number(value) || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function wallClock(began, offset) {
  return new Date(began + offset * 1000).toLocaleTimeString([], { hour12: false });
}

// PCM frames from the stream: an AudioWorklet, or a ScriptProcessor where there is none.
async function capture(context, source, send) {
  if (context.audioWorklet && typeof AudioWorkletNode !== "undefined") {
    try {
      await context.audioWorklet.addModule("/static/pcm-worklet.js");
      const node = new AudioWorkletNode(context, "pcm-capture", { numberOfInputs: 1, numberOfOutputs: 0 });
      node.port.onmessage = (event) => send(event.data);
      source.connect(node);
      return node;
    } catch {
      // fall through to the ScriptProcessor
    }
  }
  const node = context.createScriptProcessor(4096, 1, 1);
  node.onaudioprocess = (event) => send(new Float32Array(event.inputBuffer.getChannelData(0)));
  source.connect(node);
  node.connect(context.destination); // a ScriptProcessor runs only when connected; its output is silence
  return node;
}

function socketUrl(library, rate) {
  const url = new URL(`/v1/libraries/${encodeURIComponent(library)}/monitor/live`, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = new URLSearchParams({ rate: String(rate), channels: "1", sample_type: "f32le" }).toString();
  if (token()) url.searchParams.set("access_token", token()); // a browser cannot set headers on a WebSocket
  return url.toString();
}

function show(event, began) {
  if (event.error) {
    report("listen-status", `${event.error.code}: ${event.error.message}`, true);
  } else if (event.event === "started") {
    $("now-playing").textContent = `now playing: ${event.name}`;
    $("now-playing").dataset.itemId = event.id;
  } else if (event.event === "match") {
    const entry = document.createElement("li");
    entry.dataset.itemId = event.id;
    const speed = Math.abs(event.speed - 1) >= 0.005 ? `, x${Number(event.speed).toFixed(2)}` : "";
    entry.textContent =
      `${wallClock(began, event.stream_start)}–${wallClock(began, event.stream_end)}  ${event.name}` +
      ` (its ${clock(event.item_start)}–${clock(event.item_end)}${speed})`;
    $("timeline").append(entry);
    if ($("now-playing").dataset.itemId === String(event.id)) {
      $("now-playing").textContent = "";
      delete $("now-playing").dataset.itemId;
    }
  } else if (event.event === "summary") {
    const n = event.occurrences;
    report("listen-status", `${n} ${n === 1 ? "occurrence" : "occurrences"} in ${clock(event.scanned_seconds)} of audio.`);
  }
}

async function listen() {
  const library = $("library").value;
  if (!library) {
    report("listen-status", "Pick or create a library first.", true);
    return;
  }
  report("listen-status", "Asking for the microphone…");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    report("listen-status", `No microphone: ${error.message}`, true);
    return;
  }
  const context = new AudioContext();
  const socket = new WebSocket(socketUrl(library, context.sampleRate));
  socket.binaryType = "arraybuffer";
  const began = Date.now();
  const waiting = []; // frames captured before the socket opened
  session = { stream, context, socket, node: null, ended: false };
  const send = (frame) => {
    if (session === null || session.ended) return;
    if (socket.readyState === WebSocket.OPEN) socket.send(frame.buffer);
    else if (socket.readyState === WebSocket.CONNECTING) waiting.push(frame);
  };
  socket.onopen = () => {
    for (const frame of waiting.splice(0)) socket.send(frame.buffer);
    report("listen-status", `Listening, in ${library}…`);
  };
  let failed = false;
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    failed ||= Boolean(event.error);
    show(event, began);
  };
  socket.onclose = (event) => {
    if (event.code !== 1000 && !failed) report("listen-status", `The connection closed (code ${event.code}).`, true);
    stopCapture();
    $("now-playing").textContent = "";
    $("listen").disabled = false;
    $("stop").disabled = true;
    session = null;
  };
  $("timeline").replaceChildren();
  $("now-playing").textContent = "";
  $("listen").disabled = true;
  $("stop").disabled = false;
  const source = context.createMediaStreamSource(stream);
  session.node = await capture(context, source, send);
}

function stopCapture() {
  if (!session) return;
  for (const track of session.stream.getTracks()) track.stop();
  if (session.context.state !== "closed") session.context.close();
}

// Stop: no more audio; the server sends the last events, then closes.
function stop() {
  if (!session) return;
  session.ended = true;
  stopCapture();
  $("stop").disabled = true;
  if (session.socket.readyState === WebSocket.OPEN) {
    session.socket.send("end");
    report("listen-status", "Stopping: the last events…");
  } else {
    session.socket.close();
  }
}

$("listen").addEventListener("click", () => listen());
$("stop").addEventListener("click", () => stop());
