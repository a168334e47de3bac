// The sedic page: plain JavaScript over the /v1 API (no build step). See docs/serve.md.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];
const STREAMS = ["reference", "text", "masks", "header"];
// One state for the page: what is shown is what Decode sends and what Download gives. setImage and
// clearFile are the only ways to change the image and the file, so no part of the page is left stale.
const state = {
  key: sessionStorage.getItem("sedic-key") || "",
  image: null,        // the chosen original (File), if any; Compress is enabled exactly when set
  imageUrl: null,
  sedic: null,        // the .sedic being shown (Blob), set only once the server has read it
  sedicName: "image.sedic",
  stageUrls: [],
  decoding: null,     // AbortController of the running decode
};

// The decoder-schedule inputs, each one optional form field of POST /v1/compress (sedic/schedule.py
// ScheduleOverrides; tests/test_browser.py checks the names and choices against /openapi.json). This
// table is the only place they are listed: buildScheduleFields makes the inputs (id: the field with
// "-" for "_"), compress sends the ones given. Empty, or "profile default", sends nothing: the
// profile's value. Limits: what the file can store (steps 1-1000, guidance 0-100 in tenths).
const SCHEDULE_FIELDS = [
  { field: "schedule", label: "Decoder schedule", choices: ["sequential", "fused"], help: "schedule" },
  { field: "object_steps", label: "Steps per object", min: 1, max: 1000, step: 1, help: "steps" },
  { field: "final_steps", label: "Steps of the final stage", min: 1, max: 1000, step: 1, help: "steps" },
  { field: "object_cfg", label: "Guidance per object", min: 0, max: 100, step: 0.1, help: "cfg" },
  { field: "final_cfg", label: "Guidance of the final stage", min: 0, max: 100, step: 0.1, help: "cfg" },
];
const SCHEDULE_HELP = {
  schedule: "Sequential: the paper's decoder, one object at a time, then the whole picture; slower. " +
    "Fused: all objects in one pass (each object's text steers only inside its mask), about 2-5x less " +
    "decoder work, with the final stage's steps and guidance; its quality is not yet compared on real models.",
  steps: "Steps: how many times the decoder refines each object and then the whole picture. More steps " +
    "decode slower and draw finer detail; empty keeps the profile's.",
  cfg: "Guidance: how strongly the texts steer the decoder (0-100, in tenths). Higher follows the words " +
    "more closely, too high looks overdone; empty keeps the profile's.",
};

function fieldId(field) {
  return field.replace(/_/g, "-");
}

// The inputs of SCHEDULE_FIELDS, in the form's grid where index.html marks their place; each group's
// help follows its last input (inside the label when the group is one input, as the profile's).
function buildScheduleFields() {
  const made = [];
  SCHEDULE_FIELDS.forEach((spec, k) => {
    const label = document.createElement("label");
    let input;
    if (spec.choices) {
      input = document.createElement("select");
      input.append(new Option("profile default", "", true, true), ...spec.choices.map((c) => new Option(c, c)));
    } else {
      input = document.createElement("input");
      Object.assign(input, { type: "number", min: spec.min, max: spec.max, step: spec.step,
                             placeholder: "profile's" });
    }
    input.id = fieldId(spec.field);
    input.setAttribute("aria-describedby", `${spec.help}-help`);
    label.append(spec.label + " ", input);
    made.push(label);
    const next = SCHEDULE_FIELDS[k + 1];
    if (next && next.help === spec.help) return;
    const help = document.createElement("small");
    help.id = `${spec.help}-help`;
    help.className = "muted";
    help.textContent = SCHEDULE_HELP[spec.help];
    const alone = SCHEDULE_FIELDS.filter((s) => s.help === spec.help).length === 1;
    if (alone) label.append(help);
    else made.push(help);
  });
  $("schedule-fields").replaceWith(...made);
}

// The server words some messages for the CLI; on the page they name the page's own controls.
const PAGE_WORDS = [[/pass --best-effort/g, 'tick "best effort"'], [/--best-effort/g, '"best effort"'],
                    [/raise --bpp/g, "choose a higher rate"], [/--bpp/g, "the rate"],
                    [/--stages/g, "the stage"]];

function forThePage(message) {
  return PAGE_WORDS.reduce((text, [flag, words]) => text.replace(flag, words), message);
}

function status(message, isError = false) {
  const el = $("status");
  el.textContent = forThePage(message);
  el.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = body.error;
    } catch (e) { /* not JSON: keep the status line */ }
    if (response.status === 401) $("key-panel").hidden = false;
    const retry = response.headers.get("Retry-After");
    if (response.status === 503 && retry) message += ` (retry in ${retry} s)`;
    throw new Error(message);
  }
  return response;
}

async function loadProfiles() {
  try {
    const info = await (await api("/v1/profiles")).json();
    const select = $("profile");
    select.replaceChildren(...info.profiles.map((p) => {
      const option = new Option(p.name, p.name, p.default, p.default);
      option.title = p.description;
      return option;
    }));
    showProfileHelp();
  } catch (e) {
    status(e.message, true);
  }
}

// What the server changed on the user's behalf (alpha dropped, first frame only, text cut, ...).
function showWarnings(warnings) {
  const list = $("warnings");
  list.replaceChildren(...(warnings || []).map((text) => {
    const item = document.createElement("li");
    item.textContent = forThePage(text);
    return item;
  }));
  list.hidden = !list.children.length;
}

// ---- the busy bar: what runs, for how long, and Cancel --------------------------------------------

let busy = null;  // {controller, started, timer} of the job in progress

function startBusy(text, controller) {
  endBusy();
  busy = { controller, started: performance.now(),
           timer: setInterval(() => { $("busy-time").textContent = elapsed(); }, 250) };
  $("busy-text").textContent = text;
  $("busy-time").textContent = elapsed();
  $("busy-bar").removeAttribute("value");  // indeterminate until the stream says how far it is
  $("busy").hidden = false;
  $("busy").scrollIntoView({ block: "nearest" });
}

function elapsed() {
  return busy ? `${((performance.now() - busy.started) / 1000).toFixed(1)} s` : "";
}

function showProgress(text, fraction) {
  if (!busy) return;
  $("busy-text").textContent = text;
  if (fraction !== undefined) $("busy-bar").value = Math.min(1, Math.max(0, fraction));
}

function endBusy(controller) {
  if (!busy || (controller && busy.controller !== controller)) return;
  clearInterval(busy.timer);
  busy = null;
  $("busy").hidden = true;
}

// Aborting the request is what stops the job: the server cancels the work of a client that went away.
function cancelJob() {
  if (!busy) return;
  const controller = busy.controller;
  endBusy();
  controller.abort();
  status("Cancelled.");
}

function showProfileHelp() {
  const option = $("profile").selectedOptions[0];
  $("profile-help").textContent = option ? option.title : "";
}

// ---- choosing an image ------------------------------------------------------------------------

function chooseImage(file) {
  if (!file) return;
  // browsers may not name a HEIC file's type: its extension says it
  if (!/^image\/(png|jpeg|webp|avif|heic|heif)$/.test(file.type) && !/\.(avif|heic|heif)$/i.test(file.name)) {
    status(`${file.name}: choose a PNG, JPEG, WebP, AVIF or HEIC image`, true);
    return;
  }
  setImage(file);
  status("");
}

function setImage(file) {
  state.image = file;
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = file ? URL.createObjectURL(file) : null;
  $("drop-name").textContent = file ? `${file.name} (${(file.size / 1024).toFixed(1)} KB)` : "no image chosen";
  $("compress").disabled = !file;
}

// Forget the file shown (and stop its decode): nothing of it can be decoded or downloaded after this.
function clearFile() {
  if (state.decoding) { endBusy(state.decoding); state.decoding.abort(); }
  if (state.compressing) { endBusy(state.compressing); state.compressing.abort(); }
  state.decoding = null;
  state.sedic = null;
  state.masks = [];
  state.stageUrls = [];
  showWarnings([]);
  $("stages").replaceChildren();
  $("after").removeAttribute("src");
  $("result").hidden = true;
  $("decode-panel").hidden = true;
  for (const link of [$("download-sedic"), $("download-png")]) {
    if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.removeAttribute("href");
  }
}

function setUpDrop() {
  const drop = $("drop");
  const input = $("image-input");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  // emptied after each pick, so picking the same file again (after opening a .sedic) still counts
  input.addEventListener("change", () => { chooseImage(input.files[0]); input.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    chooseImage(e.dataTransfer.files[0]);
  });
}

// ---- compress --------------------------------------------------------------------------------

async function compress() {
  if (!state.image) return;
  const image = state.image;
  const form = new FormData();
  form.append("image", image, image.name);
  const extra = Array.from($("semantics-input").files);
  const json = extra.filter((f) => f.name.endsWith(".json"));
  if (json.length > 1) return status("choose one semantics JSON (and its mask PNGs)", true);
  if (json.length) {
    form.append("semantics", json[0], json[0].name);
    extra.filter((f) => f !== json[0]).forEach((f) => form.append("masks", f, f.name));
  } else if (extra.length) {
    return status("mask PNGs need their semantics JSON", true);
  }
  form.append("analyze", $("analyze").checked ? "true" : "false");
  form.append("best_effort", $("best-effort").checked ? "true" : "false");
  form.append("bpp", $("bpp").value);
  if ($("profile").value) form.append("profile", $("profile").value);
  for (const { field } of SCHEDULE_FIELDS) {
    const value = $(fieldId(field)).value;
    if (value) form.append(field, value);
  }
  $("compress").disabled = true;
  clearFile();  // a decode still streaming must not end over the new result
  const controller = new AbortController();
  state.compressing = controller;
  startBusy("Compressing...", controller);
  status("Compressing...");
  try {
    const response = await api("/v1/compress", { method: "POST", body: form, signal: controller.signal });
    const blob = await response.blob();
    if (state.image !== image) return;  // another image was chosen meanwhile
    showWarnings(JSON.parse(response.headers.get("X-Sedic-Warnings") || "[]"));
    state.sedicName = image.name.replace(/\.[^.]*$/, "") + ".sedic";
    await showFile(blob, state.imageUrl);
    status(`Compressed to ${blob.size} bytes.`);
    $("result-title").focus();  // the Compress button is disabled while working, which drops the focus
  } catch (e) {
    if (e.name !== "AbortError") status(e.message, true);
  } finally {
    endBusy(controller);
    if (state.compressing === controller) state.compressing = null;
    $("compress").disabled = !state.image;
  }
}

// ---- what the file holds -----------------------------------------------------------------------

async function showFile(blob, baseUrl) {
  const form = new FormData();
  form.append("file", blob, state.sedicName);
  const info = await (await api("/v1/inspect?masks=true", { method: "POST", body: form })).json();
  state.sedic = blob;
  $("result").hidden = false;
  $("summary").textContent = `${info.bytes} bytes, ${info.bpp.toFixed(4)} bpp, ${info.width}x${info.height}, ` +
    `profile ${info.profile}, seed ${info.seed}`;
  drawStreamBar(info.streams);
  showSizes(info, baseUrl ? state.image : null);  // baseUrl: compressed from the chosen image
  showTexts(info.semantics);
  state.masks = info.masks;
  if (baseUrl) await drawMasks(baseUrl, info.masks);
  else clearCanvas();
  const link = $("download-sedic");
  link.href = URL.createObjectURL(blob);
  link.download = state.sedicName;
  $("decode-panel").hidden = true;
}

// Sizes with their ratios: against the chosen file (when there is one) and against plain 24-bit RGB.
function showSizes(info, original) {
  const raw = info.width * info.height * 3;
  const ratio = (bytes) => `${(bytes / info.bytes).toFixed(bytes >= 10 * info.bytes ? 0 : 1)}:1`;
  let text = `.sedic ${info.bytes} bytes; uncompressed RGB ${raw} bytes (${ratio(raw)})`;
  if (original) text = `Original file ${original.size} bytes (${ratio(original.size)}); ` + text;
  $("sizes").textContent = text;
}

function drawStreamBar(streams) {
  const total = STREAMS.reduce((sum, name) => sum + streams[name], 0);
  const bar = $("stream-bar");
  const legend = $("stream-legend");
  bar.replaceChildren();
  legend.replaceChildren();
  for (const name of STREAMS) {
    const share = streams[name] / total;
    const part = document.createElement("span");
    part.style.width = `${(100 * share).toFixed(2)}%`;
    part.style.background = `var(--${name})`;
    part.dataset.stream = name;
    part.dataset.bits = streams[name];
    part.title = `${name}: ${streams[name]} bits`;
    bar.append(part);
    const item = document.createElement("li");
    item.innerHTML = `<i style="background: var(--${name})"></i>`;
    item.append(`${name} ${streams[name]} bits (${(100 * share).toFixed(1)} %)`);
    legend.append(item);
  }
  bar.setAttribute("aria-label", "bits per stream: " +
    STREAMS.map((n) => `${n} ${streams[n]}`).join(", ") + ` of ${total}`);
}

function showTexts(semantics) {
  $("overall").textContent = semantics.overall || "(none)";
  const list = $("objects");
  list.replaceChildren(...semantics.objects.map((obj, k) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = COLORS[k % COLORS.length];
    const name = document.createElement("strong");
    name.textContent = obj.name;
    item.append(swatch, name, `: ${obj.description}`);
    return item;
  }));
}

function loadImage(src) {
  const img = new Image();
  img.src = src;
  return img.decode().then(() => img);
}

function clearCanvas() {
  const canvas = $("mask-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

async function drawMasks(baseUrl, masks) {
  const canvas = $("mask-canvas");
  const base = await loadImage(baseUrl);
  canvas.width = base.naturalWidth;
  canvas.height = base.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(base, 0, 0);
  for (let k = 0; k < masks.length; k++) {
    const mask = await loadImage(masks[k]);
    const layer = document.createElement("canvas");
    layer.width = canvas.width;
    layer.height = canvas.height;
    const lctx = layer.getContext("2d");
    lctx.imageSmoothingEnabled = false;
    lctx.drawImage(mask, 0, 0, mask.naturalWidth * 8, mask.naturalHeight * 8);  // one cell = 8 pixels
    const pixels = lctx.getImageData(0, 0, layer.width, layer.height);
    const [r, g, b] = COLORS[k % COLORS.length].match(/\w\w/g).map((h) => parseInt(h, 16));
    for (let i = 0; i < pixels.data.length; i += 4) {
      const inside = pixels.data[i] > 127;
      pixels.data.set([r, g, b, inside ? 110 : 0], i);
    }
    lctx.putImageData(pixels, 0, 0);
    ctx.drawImage(layer, 0, 0);
  }
}

// ---- decode, stage by stage (Server-Sent Events over a POST) ----------------------------------

async function decode() {
  if (state.decoding) state.decoding.abort();
  const controller = new AbortController();
  state.decoding = controller;
  const form = new FormData();
  form.append("file", state.sedic, state.sedicName);
  $("decode").disabled = true;
  $("decode-panel").hidden = false;
  $("decode-title").focus();  // (the disabled Decode button would drop it); next Tab: the stages
  $("download-png").hidden = true;
  delete $("decode-panel").dataset.done;
  $("stages").replaceChildren();
  state.stageUrls = [];
  $("before").src = state.imageUrl || "";
  $("after").removeAttribute("src");
  startBusy("Decoding...", controller);
  status("Decoding...");
  try {
    const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
    const response = await fetch("/v1/decompress/stream", { method: "POST", body: form, headers,
                                                             signal: controller.signal });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch (e) { /* keep */ }
      throw new Error(message);
    }
    for await (const [event, data] of readEvents(response.body)) {
      if (controller.signal.aborted) break;  // events already read must not land on a newer file
      onEvent(event, data);
    }
  } catch (e) {
    if (e.name !== "AbortError") status(e.message, true);
  } finally {
    endBusy(controller);
    $("decode").disabled = false;
    if (state.decoding === controller) state.decoding = null;
  }
}

async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield [event, JSON.parse(data)];
    }
  }
}

function stageItem(index) {
  return $("stages").children[index];
}

function onEvent(event, data) {
  if (event === "info") {
    $("stages").replaceChildren(...data.labels.map((label, k) => {
      const item = document.createElement("li");
      item.dataset.stage = k;
      const button = document.createElement("button");
      button.type = "button";
      button.disabled = true;
      button.textContent = `${k}. ${label}`;
      button.addEventListener("click", () => selectStage(k));
      item.append(button);
      return item;
    }));
  } else if (event === "stage") {
    stageItem(data.index).classList.add("running");
    state.stageLabel = `Decoding stage ${data.index}/${data.total}: ${data.label}`;
    state.stageAt = [data.index, data.total];
    status(state.stageLabel + "...");
    showProgress(state.stageLabel, data.index / (data.total + 1));
  } else if (event === "step") {
    // one decode; image k is exactly `sedic decompress --stages k`
    const text = `${state.stageLabel}: decoder stage ${data.stage}/${data.stages}, step ${data.step}/${data.steps}`;
    status(text);
    const [index, total] = state.stageAt || [0, 0];
    const within = ((data.stage - 1) + data.step / data.steps) / data.stages;
    showProgress(text, (index + within) / (total + 1));
  } else if (event === "image") {
    const url = "data:image/png;base64," + data.png;
    state.stageUrls[data.index] = url;
    const item = stageItem(data.index);
    item.classList.replace("running", "done");
    item.querySelector("button").disabled = false;
    if (data.index === 0 && !state.imageUrl) {
      $("before").src = url;  // an opened file: compare with the preview
      drawMasks(url, state.masks || []);
    }
    selectStage(data.index);
  } else if (event === "done") {
    const last = state.stageUrls.length - 1;
    $("download-png").hidden = false;
    selectStage(last);
    $("decode-panel").dataset.done = "true";
    showWarnings(data.warnings);
    status(`Decoded: ${last + 1} stages.`);
  } else if (event === "error") {
    status(data.error, true);
  }
}

// The selected stage is the one shown and the one "Download PNG" gives (the final one: name.png).
function selectStage(index) {
  $("after").src = state.stageUrls[index];
  const link = $("download-png");
  const last = index === state.stageUrls.length - 1 && $("decode-panel").dataset.done;
  link.href = state.stageUrls[index];
  link.download = state.sedicName.replace(/\.sedic$/, "") + (last ? ".png" : `.stage${index}.png`);
  link.textContent = last ? "Download PNG" : `Download PNG (stage ${index})`;
  for (const item of $("stages").children) item.classList.toggle("selected", Number(item.dataset.stage) === index);
}

// Dragging on the image moves the divider too (the slider stays the keyboard's way).
function dragDivider(e) {
  if (e.type === "pointerdown") {
    e.preventDefault();  // no native image drag, which would take the pointer away
    e.currentTarget.setPointerCapture(e.pointerId);
  }
  else if (!e.currentTarget.hasPointerCapture(e.pointerId)) return;
  const box = e.currentTarget.getBoundingClientRect();
  $("slider").value = Math.round(100 * (e.clientX - box.left) / box.width);
  setSlider();
}

function setSlider() {
  const value = $("slider").value;
  $("after").style.clipPath = `inset(0 0 0 ${value}%)`;
  $("divider").style.left = `${value}%`;
}

// Zoom: "fit" shows the whole image; 1, 2 or 4 screen pixels per image pixel otherwise, scrolled
// inside the view, keeping the point at the view's centre where it was.
function setZoom() {
  const view = $("compare-view"), compare = $("compare"), zoom = $("zoom").value;
  const width = $("after").naturalWidth || $("before").naturalWidth;
  const centre = [(view.scrollLeft + view.clientWidth / 2) / (compare.offsetWidth || 1),
                  (view.scrollTop + view.clientHeight / 2) / (compare.offsetHeight || 1)];
  const actual = zoom !== "fit" && width > 0;
  view.classList.toggle("actual", actual);
  compare.style.width = actual ? `${width * Number(zoom)}px` : "";
  if (actual) {
    view.scrollLeft = centre[0] * compare.offsetWidth - view.clientWidth / 2;
    view.scrollTop = centre[1] * compare.offsetHeight - view.clientHeight / 2;
  }
}

// ---- open a .sedic ---------------------------------------------------------------------------

async function openSedic(file) {
  if (!file) return;
  setImage(null);
  clearFile();
  state.sedicName = file.name;
  try {
    await showFile(file, null);
    status(`${file.name}: press "Decode stage by stage".`);
  } catch (e) {
    status(e.message, true);
  }
}

function useKey() {
  state.key = $("api-key").value.trim();
  sessionStorage.setItem("sedic-key", state.key);
  $("key-panel").hidden = true;
  if ($("status").classList.contains("error")) status("");  // the 401 text was about the old key
  loadProfiles();
}

function init() {
  buildScheduleFields();
  setUpDrop();
  $("compress").addEventListener("click", compress);
  $("decode").addEventListener("click", decode);
  $("slider").addEventListener("input", setSlider);
  $("zoom").addEventListener("change", setZoom);
  $("after").addEventListener("load", setZoom);  // a new stage or file keeps the chosen zoom
  $("compare").addEventListener("pointerdown", dragDivider);
  $("compare").addEventListener("pointermove", dragDivider);
  $("sedic-input").addEventListener("change", () => { openSedic($("sedic-input").files[0]); $("sedic-input").value = ""; });
  $("key-save").addEventListener("click", useKey);
  $("cancel").addEventListener("click", cancelJob);
  $("profile").addEventListener("change", showProfileHelp);
  $("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") useKey(); });
  setSlider();
  loadProfiles();
}

init();
