// The UCR web page: separate, generate and vary through the same HTTP API as curl (no asset from outside the app).
// Responses are zips of float32 WAV files (stored, uncompressed); this file reads them, draws a spectrogram per
// component and mixes the components in the browser (Web Audio) so that any of them can be muted or soloed.
"use strict";

const KEY_STORAGE = "ucr-api-key";  // sessionStorage: kept for this tab only
const state = { model: null, mixers: {} };

// ------------------------------------------------------------------------------------------------ small helpers
const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function headers(extra = {}) {
  const key = apiKey();
  return key ? { "X-API-Key": key, ...extra } : extra;
}

// One error box, moved under the status line of the section whose request failed.
function showError(message, statusId = null) {
  const box = $("error");
  if (statusId) $(statusId).after(box);
  box.textContent = message;
  box.hidden = !message;
  if (message) box.scrollIntoView({ block: "nearest" });
}

// An API error as one readable sentence: the status, what the server said, and what to do.
function describeError(status, bodyText, retryAfter) {
  let detail = bodyText;
  try {
    const body = JSON.parse(bodyText);
    detail = body.detail !== undefined ? body.detail : body;
  } catch (_) { /* not JSON: keep the text */ }
  if (Array.isArray(detail)) {  // FastAPI's 422: a list of {loc, msg}
    detail = detail.map((item) => `${(item.loc || []).filter((part) => part !== "query" && part !== "body").join(".")}: ${item.msg}`).join("; ");
  } else if (typeof detail !== "string") {
    detail = JSON.stringify(detail);
  }
  const titles = { 400: "The file cannot be used", 401: "An API key is needed", 408: "The upload timed out",
                   409: "This model cannot do that", 413: "Too large", 415: "Unsupported file type",
                   422: "A setting is out of range", 503: "The service is busy" };
  let message = `${titles[status] || "Request failed"} (HTTP ${status}): ${detail || "no details"}`;
  if (status === 401) message += "\nEnter the service's API key at the top of the page.";
  if (status === 503 && retryAfter) message += `\nRetry in ${retryAfter} s.`;
  if (status === 0) message = "The service could not be reached (network error). Is it still running?";
  return message;
}

// XMLHttpRequest rather than fetch: it reports upload progress.
function request(method, path, { body = null, json = null, onUpload = null } = {}) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    xhr.responseType = "arraybuffer";
    for (const [name, value] of Object.entries(headers(json ? { "Content-Type": "application/json" } : {})))
      xhr.setRequestHeader(name, value);
    if (onUpload) {
      xhr.upload.addEventListener("progress", (event) => onUpload("progress", event));
      xhr.upload.addEventListener("load", () => onUpload("sent"));
    }
    xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response,
                                                  retryAfter: xhr.getResponseHeader("Retry-After"),
                                                  type: xhr.getResponseHeader("Content-Type") || "" }));
    xhr.addEventListener("error", () => resolve({ status: 0, body: new ArrayBuffer(0) }));
    xhr.send(json ? JSON.stringify(json) : body);
  });
}

const text = (buffer) => new TextDecoder().decode(buffer);

// A status line with a progress bar while uploading, then the time the server has been working.
function progressReporter(statusId) {
  const status = $(statusId);
  const started = performance.now();
  let timer = null;
  const bar = el("progress", { max: 1, value: 0, "aria-label": "upload progress" });
  const label = el("span", { text: " uploading…" });
  status.replaceChildren(bar, label);
  const working = () => {
    const begun = performance.now();
    bar.removeAttribute("value");  // indeterminate
    timer = setInterval(() => { label.textContent = ` the server is working… ${((performance.now() - begun) / 1000).toFixed(1)} s`; }, 100);
    label.textContent = " the server is working… 0.0 s";
  };
  return {
    upload(kind, event) {
      if (kind === "progress" && event.lengthComputable) { bar.value = event.loaded / event.total; label.textContent = ` uploading… ${Math.round(100 * event.loaded / event.total)} %`; }
      if (kind === "sent") working();
    },
    working,
    done(message) {
      clearInterval(timer);
      status.replaceChildren(el("span", { text: message || `done in ${((performance.now() - started) / 1000).toFixed(1)} s` }));
    },
  };
}

// ------------------------------------------------------------------------------------------------ zip and WAV
// The API's zips are written with ZIP_STORED: read the central directory and slice each file out.
function readZip(buffer) {
  const view = new DataView(buffer);
  let end = -1;
  for (let i = buffer.byteLength - 22; i >= Math.max(0, buffer.byteLength - 65557); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { end = i; break; }
  }
  if (end < 0) throw new Error("the response is not a zip file");
  const count = view.getUint16(end + 10, true);
  let offset = view.getUint32(end + 16, true);
  const files = {};
  for (let n = 0; n < count; n++) {
    if (view.getUint32(offset, true) !== 0x02014b50) throw new Error("damaged zip directory");
    const method = view.getUint16(offset + 10, true);
    const size = view.getUint32(offset + 20, true);
    const nameLength = view.getUint16(offset + 28, true);
    const extraLength = view.getUint16(offset + 30, true);
    const commentLength = view.getUint16(offset + 32, true);
    const local = view.getUint32(offset + 42, true);
    const name = text(new Uint8Array(buffer, offset + 46, nameLength));
    if (method !== 0) throw new Error(`zip entry ${name} is compressed (method ${method}); expected stored files`);
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    files[name] = buffer.slice(start, start + size);
    offset += 46 + nameLength + extraLength + commentLength;
  }
  return files;
}

// WAV (PCM 16/24/32-bit or IEEE float) -> {rate, channels: [Float32Array]}.
function readWav(buffer) {
  const view = new DataView(buffer);
  if (text(new Uint8Array(buffer, 0, 4)) !== "RIFF" || text(new Uint8Array(buffer, 8, 4)) !== "WAVE") throw new Error("not a WAV file");
  let offset = 12, format = null, data = null;
  while (offset + 8 <= buffer.byteLength) {
    const id = text(new Uint8Array(buffer, offset, 4));
    const size = view.getUint32(offset + 4, true);
    if (id === "fmt ") {
      let tag = view.getUint16(offset + 8, true);
      if (tag === 0xfffe) tag = view.getUint16(offset + 32, true);  // WAVE_FORMAT_EXTENSIBLE: the sub-format
      format = { tag, channels: view.getUint16(offset + 10, true), rate: view.getUint32(offset + 12, true),
                 bits: view.getUint16(offset + 22, true) };
    } else if (id === "data") {
      data = { start: offset + 8, size: Math.min(size, buffer.byteLength - offset - 8) };
    }
    offset += 8 + size + (size % 2);
  }
  if (!format || !data) throw new Error("WAV without fmt or data chunk");
  const bytes = format.bits / 8;
  const frames = Math.floor(data.size / (bytes * format.channels));
  const channels = Array.from({ length: format.channels }, () => new Float32Array(frames));
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < format.channels; c++) {
      const at = data.start + (i * format.channels + c) * bytes;
      let value;
      if (format.tag === 3) value = bytes === 8 ? view.getFloat64(at, true) : view.getFloat32(at, true);
      else if (bytes === 2) value = view.getInt16(at, true) / 32768;
      else if (bytes === 3) value = ((view.getUint8(at + 2) << 24 | view.getUint8(at + 1) << 16 | view.getUint8(at) << 8) >> 8) / 8388608;
      else value = view.getInt32(at, true) / 2147483648;
      channels[c][i] = value;
    }
  }
  return { rate: format.rate, channels };
}

function mono(wav) {
  if (wav.channels.length === 1) return wav.channels[0];
  const out = new Float32Array(wav.channels[0].length);
  for (const channel of wav.channels) for (let i = 0; i < out.length; i++) out[i] += channel[i] / wav.channels.length;
  return out;
}

function rmsDb(samples) {
  let sum = 0;
  for (const value of samples) sum += value * value;
  return 10 * Math.log10(sum / Math.max(1, samples.length) + 1e-20);
}

// ------------------------------------------------------------------------------------------------ spectrogram
function fft(re, im) {  // in place, radix 2; length a power of two
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let size = 2; size <= n; size <<= 1) {
    const angle = -2 * Math.PI / size;
    for (let start = 0; start < n; start += size) {
      for (let k = 0; k < size / 2; k++) {
        const wr = Math.cos(angle * k), wi = Math.sin(angle * k);
        const a = start + k, b = a + size / 2;
        const tr = re[b] * wr - im[b] * wi, ti = re[b] * wi + im[b] * wr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
      }
    }
  }
}

// Log-magnitude STFT (1024-sample Hann frames, up to 600 columns) drawn with a dark-to-yellow colour map.
function drawSpectrogram(canvas, samples) {
  const size = 1024, bins = size / 2;
  const columns = Math.max(1, Math.min(600, Math.floor(samples.length / 256)));
  const hop = Math.max(1, Math.floor((samples.length - size) / columns));
  const window = Float32Array.from({ length: size }, (_, i) => 0.5 - 0.5 * Math.cos(2 * Math.PI * i / size));
  const magnitudes = new Float32Array(columns * bins);
  let peak = -Infinity;
  for (let c = 0; c < columns; c++) {
    const re = new Float32Array(size), im = new Float32Array(size);
    for (let i = 0; i < size; i++) re[i] = (samples[c * hop + i] || 0) * window[i];
    fft(re, im);
    for (let b = 0; b < bins; b++) {
      const value = 10 * Math.log10(re[b] * re[b] + im[b] * im[b] + 1e-12);
      magnitudes[c * bins + b] = value;
      if (value > peak) peak = value;
    }
  }
  const rows = 128;
  canvas.width = columns; canvas.height = rows;
  const context = canvas.getContext("2d");
  const image = context.createImageData(columns, rows);
  for (let r = 0; r < rows; r++) {
    const b = Math.min(bins - 1, Math.floor(Math.pow(bins, (rows - 1 - r) / (rows - 1))));  // log-frequency rows
    for (let c = 0; c < columns; c++) {
      const level = Math.max(0, Math.min(1, (magnitudes[c * bins + b] - peak + 80) / 80));  // 80 dB range
      const at = 4 * (r * columns + c);
      image.data[at] = 255 * Math.min(1, 1.6 * level);
      image.data[at + 1] = 255 * Math.max(0, level * level);
      image.data[at + 2] = 255 * Math.max(0, 0.55 - level) * (level > 0 ? 1 : 0);
      image.data[at + 3] = 255;
    }
  }
  context.putImageData(image, 0, 0);
}

// ------------------------------------------------------------------------------------------------ players and mixer
// Every component plays through a gain node of 1/K (the model composes by averaging), so muting a component gives
// "the mix without it" at the mixture's level. Solo wins over mute: with any solo on, only soloed components sound.
class Mixer {
  constructor(name, waves) {
    this.name = name;
    this.waves = waves;  // [{rate, channels}]
    this.muted = waves.map(() => false);
    this.soloed = waves.map(() => false);
    this.context = null; this.gains = []; this.sources = [];
  }
  audible(k) { return this.soloed.some(Boolean) ? this.soloed[k] : !this.muted[k]; }
  gainValues() { return this.waves.map((_, k) => (this.audible(k) ? 1 / this.waves.length : 0)); }
  update() { this.gains.forEach((gain, k) => { gain.gain.value = this.gainValues()[k]; }); }
  play() {
    this.stop();
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    this.context = this.context || new AudioContextClass();
    const values = this.gainValues();
    const when = this.context.currentTime + 0.05;
    this.waves.forEach((wave, k) => {
      const buffer = this.context.createBuffer(wave.channels.length, wave.channels[0].length, wave.rate);
      wave.channels.forEach((channel, c) => buffer.copyToChannel(channel, c));
      const source = this.context.createBufferSource();
      const gain = this.context.createGain();
      gain.gain.value = values[k];
      source.buffer = buffer;
      source.connect(gain).connect(this.context.destination);
      source.start(when);
      this.sources.push(source); this.gains.push(gain);
    });
    if (this.context.state === "suspended") this.context.resume();
  }
  stop() {
    for (const source of this.sources) { try { source.stop(); } catch (_) { /* not started */ } }
    this.sources = []; this.gains = [];
  }
}

function audioPlayer(buffer, label) {
  const url = URL.createObjectURL(new Blob([buffer], { type: "audio/wav" }));
  return { url, node: el("audio", { controls: true, preload: "metadata", src: url, "aria-label": label }) };
}

function componentNames(count) {
  const names = state.model && state.model.config && state.model.config.component_names;
  return Array.from({ length: count }, (_, k) => (names && names[k]) || `component ${k}`);
}

// One row per track: name, player, spectrogram, optional mute/solo, download link.
function trackRow(mixer, k, name, buffer, wav, fileName) {
  const samples = mono(wav);
  const player = audioPlayer(buffer, `${name} audio`);
  const canvas = el("canvas", { role: "img", "aria-label": `spectrogram of ${name}` });
  const seconds = samples.length / wav.rate;
  const level = rmsDb(samples);
  const row = el("div", { class: "component", "data-name": name, "data-seconds": seconds.toFixed(4),
                          "data-rms-db": level.toFixed(2), "data-audible": "true", "data-k": mixer ? String(k) : null });
  const controls = el("div", { class: "controls" });
  if (mixer) {
    const mute = el("button", { type: "button", class: "secondary mute", "aria-pressed": "false", text: "Mute",
                                "aria-label": `mute ${name}` });
    const solo = el("button", { type: "button", class: "secondary solo", "aria-pressed": "false", text: "Solo",
                                "aria-label": `solo ${name}` });
    const refresh = () => {
      mixer.update();
      document.querySelectorAll(`[data-mixer="${mixer.name}"] .component[data-k]`).forEach((other) => {
        const j = Number(other.dataset.k);
        other.dataset.audible = String(mixer.audible(j));
        other.classList.toggle("muted-component", !mixer.audible(j));
      });
    };
    mute.addEventListener("click", () => { mixer.muted[k] = !mixer.muted[k]; mute.setAttribute("aria-pressed", String(mixer.muted[k])); refresh(); });
    solo.addEventListener("click", () => { mixer.soloed[k] = !mixer.soloed[k]; solo.setAttribute("aria-pressed", String(mixer.soloed[k])); refresh(); });
    controls.append(mute, solo);
  }
  controls.append(el("a", { href: player.url, download: fileName, text: "Download" }));
  row.append(el("div", {}, el("h3", { text: name }),
                el("div", { class: "muted", text: `${seconds.toFixed(2)} s · ${level.toFixed(1)} dBFS` }), controls),
             el("div", {}, player.node, canvas));
  requestAnimationFrame(() => drawSpectrogram(canvas, samples));
  return row;
}

function zipLink(buffer, fileName) {
  const url = URL.createObjectURL(new Blob([buffer], { type: "application/zip" }));
  return el("a", { href: url, download: fileName, class: "zip-link", text: `Download all (${fileName})` });
}

// One group (a separation, a generated item, a variation): its mixture as a plain player when there is one, then
// the components with a shared mixer.
function trackGroup(groupName, title, entries) {
  const mixture = entries.filter((entry) => entry.name === "mixture");
  const components = entries.filter((entry) => entry.name !== "mixture");
  const mixer = new Mixer(groupName, components.map((entry) => entry.wav));
  state.mixers[groupName] = mixer;
  const group = el("div", { class: "item", "data-mixer": groupName }, title ? el("h3", { text: title }) : null);
  mixture.forEach((entry) => group.append(trackRow(null, 0, entry.name, entry.buffer, entry.wav, entry.file)));
  group.append(el("div", { class: "mixer" },
    el("button", { type: "button", class: "play-mix", text: "Play components", onclick: () => mixer.play() }),
    el("button", { type: "button", class: "secondary", text: "Stop", onclick: () => mixer.stop() }),
    el("span", { class: "muted", text: "mute or solo components to hear the mix without them" })));
  components.forEach((entry, k) => group.append(trackRow(mixer, k, entry.name, entry.buffer, entry.wav, entry.file)));
  return group;
}

// ------------------------------------------------------------------------------------------------ the model card
async function loadModel() {
  const response = await request("GET", "model");
  const card = $("model-card");
  if (response.status !== 200) {
    card.replaceChildren(el("span", { class: "muted", text: describeError(response.status, text(response.body)) }));
    if (response.status === 401) $("api-key").focus();
    return;
  }
  const info = JSON.parse(text(response.body));
  state.model = info;
  const config = info.config || {};
  const rows = [["name", info.name], ["version", info.version], ["alias", info.alias], ["source", info.source],
                ["preset", config.preset], ["codec", config.codec], ["components (K)", config.n_components],
                ["component names", (config.component_names || []).join(", ")],
                ["training sources", (config.sources || []).join(", ")], ["training step", config.step],
                ["separation mode", config.separation], ["one-pass blend level α*", config.one_pass_alpha],
                ["sampler steps", config.sampler_steps],
                ["prior", config.has_prior ? "yes: generate and vary work" : "no: separation only"],
                ["sample rate", `${config.sample_rate} Hz`]];
  for (const [name, value] of Object.entries(info.card || {})) rows.push([name, typeof value === "object" ? JSON.stringify(value) : value]);
  const list = el("dl");
  for (const [name, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    list.append(el("dt", { text: name }), el("dd", { text: String(value) }));
  }
  card.replaceChildren(list);
  $("separate-steps").placeholder = `${config.sampler_steps} (model)`;
  $("separate-alpha").placeholder = `${config.one_pass_alpha} (model)`;
  const keep = $("vary-keep");
  keep.replaceChildren(el("legend", { text: "Components to keep" }));
  componentNames(config.n_components || 0).forEach((name, k) => {
    const box = el("input", { type: "checkbox", value: String(k), id: `keep-${k}`, checked: k === 0 });
    keep.append(el("label", { for: `keep-${k}` }, box, document.createTextNode(name)));
  });
  for (const id of ["generate-go", "vary-go"]) {
    $(id).disabled = !config.has_prior;
    $(id).title = config.has_prior ? "" : "this model has no prior";
  }
}

// ------------------------------------------------------------------------------------------------ actions
async function submit(button, statusId, path, options, onZip) {
  showError("");
  button.disabled = true;
  const progress = progressReporter(statusId);
  if (!options.body) progress.working();
  try {
    const response = await request("POST", path, { ...options, onUpload: options.body ? progress.upload : null });
    if (response.status !== 200) {
      progress.done("failed");
      showError(describeError(response.status, text(response.body), response.retryAfter), statusId);
      if (response.status === 401) $("api-key").focus();
      return;
    }
    onZip(readZip(response.body), response.body);
    progress.done();
  } catch (err) {
    progress.done("failed");
    showError(`The answer could not be read: ${err.message}`, statusId);
  } finally {
    button.disabled = false;
  }
}

function entriesOf(files, prefix, names) {
  return Object.keys(files).filter((name) => name.startsWith(prefix) && name.endsWith(".wav")).sort()
    .map((name) => ({ file: name.replace("/", "_"), buffer: files[name], wav: readWav(files[name]),
                      name: names(name) }));
}

function componentLabel(path) {
  const match = /component_(\d+)\.wav$/.exec(path);
  if (match) return componentNames(Number(match[1]) + 1)[Number(match[1])];
  return "mixture";
}

function params(pairs) {
  const query = new URLSearchParams();
  for (const [name, value] of pairs) if (value !== "" && value !== null && value !== undefined) query.append(name, value);
  return query.toString();
}

async function separate(event) {
  event.preventDefault();
  const file = $("separate-file").files[0];
  if (!file) { showError("Choose an audio file to separate first."); return; }
  const form = new FormData();
  form.append("file", file, file.name);
  const query = params([["steps", $("separate-steps").value], ["mode", $("separate-mode").value],
                        ["alpha", $("separate-alpha").value], ["seed", $("separate-seed").value]]);
  await submit($("separate-go"), "separate-status", `separate?${query}`, { body: form }, (files, zip) => {
    const entries = entriesOf(files, "component_", componentLabel);
    const result = $("separate-result");
    result.replaceChildren(zipLink(zip, "ucr-separate.zip"));
    const original = audioPlayer(file, `input ${file.name}`);
    result.append(el("div", { class: "muted" }, document.createTextNode(`input: ${file.name} `), original.node));
    result.append(trackGroup("separation", null, entries));
  });
}

async function generate(event) {
  event.preventDefault();
  const json = { seconds: Number($("generate-seconds").value), seed: Number($("generate-seed").value),
                 count: Number($("generate-count").value) };
  await submit($("generate-go"), "generate-status", "generate", { json }, (files, zip) => {
    const result = $("generate-result");
    result.replaceChildren(zipLink(zip, "ucr-generate.zip"));
    const items = [...new Set(Object.keys(files).filter((n) => n.endsWith(".wav")).map((n) => n.split("/")[0]))].sort();
    items.forEach((item, i) => result.append(trackGroup(`generate-${i}`, `generated ${i + 1}`, entriesOf(files, `${item}/`, componentLabel))));
  });
}

async function vary(event) {
  event.preventDefault();
  const file = $("vary-file").files[0];
  if (!file) { showError("Choose an audio file to vary first."); return; }
  const keep = [...document.querySelectorAll("#vary-keep input:checked")].map((box) => ["keep", box.value]);
  const form = new FormData();
  form.append("file", file, file.name);
  const query = params([...keep, ["seed", $("vary-seed").value], ["count", $("vary-count").value]]);
  await submit($("vary-go"), "vary-status", `vary?${query}`, { body: form }, (files, zip) => {
    const result = $("vary-result");
    result.replaceChildren(zipLink(zip, "ucr-vary.zip"));
    result.append(el("div", { class: "muted" }, document.createTextNode(`original: ${file.name} `), audioPlayer(file, "original").node));
    const items = [...new Set(Object.keys(files).filter((n) => n.endsWith(".wav")).map((n) => n.split("/")[0]))].sort();
    items.forEach((item, i) => result.append(trackGroup(`vary-${i}`, `variation ${i + 1}`, entriesOf(files, `${item}/`, componentLabel))));
  });
}

// ------------------------------------------------------------------------------------------------ wiring
function wireDrop() {
  const zone = $("drop"), input = $("separate-file");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault(); zone.classList.remove("over");
    if (event.dataTransfer.files.length) input.files = event.dataTransfer.files;
  });
  zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); } });
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = apiKey();
  $("key-state").textContent = apiKey() ? "key set for this tab" : "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    $("key-state").textContent = $("api-key").value.trim() ? "key set for this tab" : "no key";
    showError("");
    loadModel();
  });
  $("separate-form").addEventListener("submit", separate);
  $("generate-form").addEventListener("submit", generate);
  $("vary-form").addEventListener("submit", vary);
  wireDrop();
  window.ucr = { state, readZip, readWav, describeError };  // for the browser test and the curious
  loadModel();
});
