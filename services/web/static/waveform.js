// Waveforms on canvases, drawn from decoded audio.

const audioContext = new AudioContext();

export function decode(arrayBuffer) {
  return audioContext.decodeAudioData(arrayBuffer);
}

export function clear(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  delete canvas.dataset.drawn;
}

// The samples of `audio` (an AudioBuffer) from `from` to `to` seconds, as min/max bars.
export function draw(canvas, audio, from = 0, to = audio.duration, colour = "#2a6fdb") {
  const samples = audio.getChannelData(0);
  const first = Math.max(0, Math.floor(from * audio.sampleRate));
  const last = Math.min(samples.length, Math.ceil(to * audio.sampleRate));
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.fillStyle = colour;
  const step = Math.max(1, (last - first) / width);
  for (let x = 0; x < width; x++) {
    let low = 1;
    let high = -1;
    for (let i = Math.floor(first + x * step); i < Math.min(last, first + (x + 1) * step); i++) {
      low = Math.min(low, samples[i]);
      high = Math.max(high, samples[i]);
    }
    if (low > high) break;
    context.fillRect(x, ((1 - high) / 2) * height, 1, Math.max(1, ((high - low) / 2) * height));
  }
  canvas.dataset.drawn = "true";
}

// The whole item with the matched stretch marked, and where the player is.
export function overview(canvas, audio, offset, match, playhead = null) {
  draw(canvas, audio);
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const x = (t) => ((t - offset) / audio.duration) * width;
  context.fillStyle = "rgba(255, 170, 0, 0.30)";
  context.fillRect(x(match.start), 0, Math.max(2, x(match.end) - x(match.start)), height);
  context.fillStyle = "#d97a00";
  context.fillRect(x(match.start), 0, 2, height);
  context.fillRect(x(match.end) - 2, 0, 2, height);
  if (playhead !== null) {
    context.fillStyle = "#b00020";
    context.fillRect(x(playhead), 0, 2, height);
  }
  canvas.dataset.marked = `${match.start}-${match.end}`;
}
