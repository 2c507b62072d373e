// An AudioWorklet processor: the first input's first channel (mono float32
// at the AudioContext's rate), posted to the page about every 100 ms.
class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frames = [];
    this.length = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      this.frames.push(channel.slice());
      this.length += channel.length;
      if (this.length >= sampleRate / 10) {
        const out = new Float32Array(this.length);
        let at = 0;
        for (const frame of this.frames) {
          out.set(frame, at);
          at += frame.length;
        }
        this.port.postMessage(out, [out.buffer]);
        this.frames = [];
        this.length = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
