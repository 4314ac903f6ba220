// The dbn-serve page: draw and classify, train and watch, dream, look inside. Everything goes
// through the public HTTP API, so this file doubles as an example of calling it from a
// browser: JSON and PNG bodies, images fetched as blobs, and the job event stream read with
// fetch (EventSource cannot send the Authorization header an API key needs).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("dbn-serve-key") || "", models: [], label: 3, job: null, stream: null };

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Calls the API with the key (if any) and turns error bodies into ApiFailure.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let code = "http_" + response.status;
    let message = response.statusText;
    try {
      const body = await response.json();
      code = body.error.code;
      message = body.error.message;
    } catch (_) { /* not our error shape */ }
    if (response.status === 401) $("key-form").hidden = false;
    throw new ApiFailure(response.status, code, message);
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();
const postJson = async (path, body) =>
  (await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();

// An image from the API as an object URL (an <img src> could not send the key).
async function imageUrl(path, options) {
  const blob = await (await api(path, options)).blob();
  return URL.createObjectURL(blob);
}

function setImage(img, url) {
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = url;
  img.src = url;
}

function currentModel() {
  return state.models.find((m) => m.id === $("model").value);
}

// ---------------------------------------------------------------- models

async function loadModels(select) {
  try {
    const { models } = await getJson("/v1/models");
    state.models = models;
    const box = $("model");
    const keep = select || box.value;
    box.replaceChildren(...models.map((m) => {
      const error = m.metrics.test_error;
      const text = error === undefined ? m.name : `${m.name} (${(100 * error).toFixed(2)} % test error)`;
      const aliases = (m.aliases || []).length ? ` [${m.aliases.join(", ")}]` : "";
      const option = new Option(`${text} — ${m.id}${aliases}`, m.id);
      return option;
    }));
    // The model kept from before, else the one the alias "default" points at.
    const fallback = models.find((m) => (m.aliases || []).includes("default"));
    if (models.some((m) => m.id === keep)) box.value = keep;
    else if (fallback) box.value = fallback.id;
    $("model-note").textContent = models.length ? "" : "No models yet: train one below, or import one through the API.";
    modelChanged();
  } catch (e) {
    $("model-note").textContent = `Could not list models: ${e.message}`;
  }
}

function modelChanged() {
  const model = currentModel();
  const method = $("method");
  for (const option of method.options) {
    option.disabled = !!model && !model.methods.includes(option.value);
  }
  if (method.selectedOptions[0] && method.selectedOptions[0].disabled) {
    method.value = model.methods[0] || "free_energy";
  }
  if (model && model.methods.includes("discriminative") && method.dataset.touched !== "yes") {
    method.value = "discriminative";
  }
  showCard(model);
  if (!$("view-inside").hidden) showFeatures();
  if (model) classifyPad();
}

// ---------------------------------------------------------------- classify

const pad = $("pad");
const ctx = pad.getContext("2d");
let drawing = false;
let inked = false;
let debounce = 0;

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  $("predicted").textContent = "–";
  drawBars(null);
}

function padPoint(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * (pad.width / r.width), (event.clientY - r.top) * (pad.height / r.height)];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = padPoint(event);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + 0.1, y + 0.1);
  stroke();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = padPoint(event);
  ctx.lineTo(x, y);
  stroke();
});
for (const type of ["pointerup", "pointercancel", "pointerleave"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    clearTimeout(debounce);
    debounce = setTimeout(classifyPad, 150);
  });
}

function stroke() {
  ctx.lineWidth = 22;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
  ctx.stroke();
  inked = true;
}

function drawBars(probabilities) {
  const bars = $("bars");
  if (!bars.children.length) {
    for (let d = 0; d < 10; d++) {
      const li = document.createElement("li");
      li.innerHTML = `<span>${d}</span><span class="bar"><span class="fill"></span></span><span class="value"></span>`;
      bars.append(li);
    }
  }
  const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  [...bars.children].forEach((li, d) => {
    const p = probabilities ? probabilities[d] || 0 : 0;
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".value").textContent = probabilities ? `${(100 * p).toFixed(1)} %` : "";
    li.classList.toggle("top", d === best);
    li.setAttribute("aria-label", `${d}: ${(100 * p).toFixed(1)} percent`);
  });
}

async function classifyBlob(blob, type) {
  const model = currentModel();
  if (!model) {
    $("classify-status").textContent = "Choose a model first.";
    return;
  }
  const method = $("method").value;
  $("classify-status").textContent = "…";
  try {
    const result = await (await api(`/v1/models/${model.id}/classify?method=${method}`, {
      method: "POST", headers: { "Content-Type": type }, body: blob,
    })).json();
    const prediction = result.predictions[0];
    $("predicted").textContent = String(prediction.label);
    drawBars(prediction.probabilities);
    $("classify-status").textContent = `${model.name}, ${result.method.replace("_", " ")}`;
  } catch (e) {
    $("classify-status").textContent = e.message;
  }
}

function classifyPad() {
  if (!inked) return;
  pad.toBlob((blob) => blob && classifyBlob(blob, "image/png"), "image/png");
}

$("clear").addEventListener("click", clearPad);
$("method").addEventListener("change", () => {
  $("method").dataset.touched = "yes";
  classifyPad();
});
$("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const image = new Image();
  image.onload = () => {
    // Show the upload on the pad (scaled to fit), then classify the file itself.
    clearPad();
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    const w = image.width * scale;
    const h = image.height * scale;
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    URL.revokeObjectURL(image.src);
  };
  image.src = URL.createObjectURL(file);
  classifyBlob(file, file.type || "image/png");
});

// ---------------------------------------------------------------- train

const presets = {
  // examples/mnist-dbn.json: 2.05 % by free energy on the MNIST test set.
  paper: { hidden: "500, 500, 2000", epochs: 30, learning_rate: 0.1, cd_k: 1, top_learning_rate: 0.05, top_epochs: 50, top_pcd: true, train_examples: 60000, validation_examples: 0, finetune: "", finetune_epochs: 30 },
  quick: { hidden: "200, 200", epochs: 2, learning_rate: 0.1, cd_k: 1, top_learning_rate: 0.05, top_epochs: 2, top_pcd: false, train_examples: 5000, validation_examples: 1000, finetune: "backprop", finetune_epochs: 3 },
};

function applyPreset(name) {
  const form = $("train-form");
  for (const [key, value] of Object.entries(presets[name])) {
    const field = form.elements[key];
    if (field.type === "checkbox") field.checked = value;
    else field.value = value;
  }
}

$("preset-paper").addEventListener("click", () => applyPreset("paper"));
$("preset-quick").addEventListener("click", () => applyPreset("quick"));

function specFromForm(form) {
  const f = form.elements;
  const hidden = f.hidden.value.split(/[ ,]+/).filter(Boolean).map(Number);
  const spec = {
    name: f.name.value || undefined,
    dataset: "mnist",
    architecture: { hidden, labels_in_top: true },
    pretrain: { epochs: Number(f.epochs.value), learning_rate: Number(f.learning_rate.value), cd_k: Number(f.cd_k.value) },
    train_examples: Number(f.train_examples.value),
    validation_examples: Number(f.validation_examples.value),
  };
  const top = { layer: hidden.length - 1, learning_rate: Number(f.top_learning_rate.value), epochs: Number(f.top_epochs.value) };
  if (f.top_pcd.checked) Object.assign(top, { persistent: true, cd_k: 5, momentum_final: 0.5 });
  spec.layer_overrides = [top];
  if (f.finetune.value) spec.finetune = { method: f.finetune.value, epochs: Number(f.finetune_epochs.value) };
  return spec;
}

$("train-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("job-error").textContent = "";
  try {
    const job = await postJson("/v1/jobs", specFromForm(event.target));
    watchJob(job);
    loadJobs();
  } catch (e) {
    $("job").hidden = false;
    $("job-error").textContent = `The job was refused: ${e.message}`;
  }
});

$("cancel-job").addEventListener("click", async () => {
  if (!state.job) return;
  try {
    await api(`/v1/jobs/${state.job.id}/cancel`, { method: "POST" });
  } catch (e) {
    $("job-error").textContent = e.message;
  }
});

function showJob(job) {
  state.job = job;
  $("job").hidden = false;
  $("job-id").textContent = job.id;
  $("job-status").textContent = job.status;
  $("cancel-job").disabled = ["succeeded", "failed", "cancelled"].includes(job.status);
  if (job.progress) showProgress(job.progress);
  if (job.error) $("job-error").textContent = `${job.error.code}: ${job.error.message}`;
  if (job.status === "succeeded") {
    $("job-phase").textContent = `Done: model ${job.model_id}.`;
    $("job-progress").value = 1;
    loadModels(job.model_id);
  }
  drawChart(job.history || []);
}

function showProgress(p) {
  const phase = p.phase === "pretrain" ? `layer ${p.layer + 1} of ${p.layers}` : "fine-tuning";
  $("job-phase").textContent = `${phase}, epoch ${p.epoch} of ${p.epochs}, batch ${p.batch} of ${p.batches}`;
  $("job-progress").value = p.fraction;
  const eta = p.eta_seconds;
  $("job-eta").textContent = `${(100 * p.fraction).toFixed(1)} % done` +
    (eta === undefined || eta === null ? "" : `, about ${formatSeconds(eta)} to go`) +
    `, ${Math.round(p.examples_per_sec)} examples/s`;
}

function formatSeconds(s) {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// Reads the job's server-sent events with fetch, so the API key can go in a header.
async function watchJob(job) {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  showJob(job);
  const history = [...(job.history || [])];
  try {
    const response = await api(`/v1/jobs/${job.id}/events`, { signal: controller.signal, headers: { Accept: "text/event-stream" } });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;
        const payload = JSON.parse(data.join("\n"));
        if (name === "status") {
          history.splice(0, history.length, ...(payload.history || []));
          showJob(payload);
          loadJobs();
        } else if (name === "progress") {
          showProgress(payload);
        } else if (name === "epoch") {
          history.push(payload);
          drawChart(history);
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") $("job-error").textContent = `Lost the event stream: ${e.message}`;
  }
}

// Per-epoch metrics: the reconstruction error of each layer relative to its first epoch (layers
// differ in size), and fine-tuning's training and validation errors on their own axis, from 0
// to the largest error seen.
function drawChart(history) {
  const canvas = $("chart");
  const c = canvas.getContext("2d");
  const W = canvas.width;
  const H = canvas.height;
  const left = 34;
  const right = 46;
  const top = 10;
  const bottom = 24;
  c.clearRect(0, 0, W, H);
  c.strokeStyle = "#d5dbe4";
  c.strokeRect(left, top, W - left - right, H - top - bottom);
  c.fillStyle = "#5b6678";
  c.font = "12px system-ui, sans-serif";
  c.fillText("epochs →", W / 2 - 24, H - 6);
  if (!history.length) return;
  const x = (i) => left + ((W - left - right) * (i + 0.5)) / history.length;
  const y = (v) => top + (H - top - bottom) * (1 - Math.min(1, Math.max(0, v)));
  const first = {};
  const series = { recon: [], valid: [], train: [] };
  let maxError = 0;
  history.forEach((m, i) => {
    const key = `${m.phase}-${m.layer}`;
    const has = (v) => v !== undefined && v !== null;
    if (has(m.recon_error_train)) {
      if (first[key] === undefined) first[key] = m.recon_error_train || 1;
      series.recon.push([i, m.recon_error_train / first[key], key]);
    }
    if (has(m.validation_error)) series.valid.push([i, m.validation_error, key]);
    if (has(m.train_error)) series.train.push([i, m.train_error, key]);
    for (const e of [m.validation_error, m.train_error]) if (has(e)) maxError = Math.max(maxError, e);
  });
  const scale = { recon: 1, valid: maxError || 1, train: maxError || 1 };
  const colours = { recon: "#2457c5", valid: "#c75d00", train: "#2e8540" };
  for (const [name, points] of Object.entries(series)) {
    c.strokeStyle = colours[name];
    c.fillStyle = colours[name];
    c.lineWidth = 2;
    c.beginPath();
    let previous = null;
    for (const [i, v, key] of points) {
      if (previous !== key) c.moveTo(x(i), y(v / scale[name]));
      else c.lineTo(x(i), y(v / scale[name]));
      previous = key;
    }
    c.stroke();
    if (points.length === 1) c.fillRect(x(points[0][0]) - 2, y(points[0][1] / scale[name]) - 2, 4, 4);
  }
  c.fillStyle = "#5b6678";
  c.fillText("1", left - 12, top + 10);
  c.fillText("0", left - 12, H - bottom);
  if (maxError > 0) {
    c.fillText(`${(100 * maxError).toFixed(1)} %`, W - right + 4, top + 10);
    c.fillText("0 %", W - right + 4, H - bottom);
  }
}

async function loadJobs() {
  try {
    const { jobs } = await getJson("/v1/jobs?limit=20");
    const rows = jobs.map((job) => {
      const tr = document.createElement("tr");
      const cells = [job.id, job.spec.name || "", job.status, new Date(job.created_at).toLocaleString(), job.model_id || ""];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        if (i === 0) {
          const watch = document.createElement("button");
          watch.type = "button";
          watch.textContent = text.slice(0, 12);
          watch.title = `Watch job ${text}`;
          watch.addEventListener("click", () => watchJob(job));
          td.append(watch);
        } else {
          td.textContent = text;
        }
        tr.append(td);
      });
      return tr;
    });
    $("jobs").tBodies[0].replaceChildren(...rows);
  } catch (e) {
    $("job-error").textContent = `Could not list jobs: ${e.message}`;
  }
}

// ---------------------------------------------------------------- dream

function labelButtons() {
  const box = $("label-buttons");
  for (let d = 0; d < 10; d++) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = String(d);
    b.setAttribute("aria-pressed", String(d === state.label));
    b.addEventListener("click", () => {
      state.label = d;
      for (const other of box.children) other.setAttribute("aria-pressed", String(other === b));
      dream();
    });
    box.append(b);
  }
}

$("steps").addEventListener("input", () => { $("steps-value").textContent = $("steps").value; });

// A sequence model dreams the rest of a held-out video: the frames it saw, then its own.
async function continueVideo(model, seed) {
  const example = seed % 100;
  const url = await imageUrl(`/v1/models/${model.id}/continue`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "image/png" },
    body: JSON.stringify({ example, steps: 12, seed }),
  });
  const img = $("samples");
  setImage(img, url);
  const [h, w] = model.image_shape || [28, 28];
  img.classList.add("video");
  img.width = 4 * w;
  img.height = 4 * h;
  img.alt = `Held-out video ${example}, continued by the model for 12 frames (animated)`;
  $("dream-status").textContent = `Held-out video ${example}: the frames the model saw, then 12 it generated (seed ${seed}).`;
}

async function dream() {
  const model = currentModel();
  if (!model) return;
  const steps = $("steps").value;
  const seed = Math.floor(Math.random() * 1e9);
  $("dream-status").textContent = "Sampling…";
  try {
    if (model.spec && model.spec.sequence) return await continueVideo(model, seed);
    $("samples").classList.remove("video");
    $("samples").width = 291;
    $("samples").height = 117;
    const url = await imageUrl(`/v1/models/${model.id}/samples.png?label=${state.label}&count=20&gibbs_steps=${steps}&seed=${seed}&columns=10`);
    setImage($("samples"), url);
    $("samples").alt = `Twenty generated ${state.label}s after ${steps} Gibbs steps`;
    $("dream-status").textContent = `Twenty ${state.label}s after ${steps} Gibbs steps (seed ${seed}).`;
  } catch (e) {
    $("dream-status").textContent = e.message;
  }
}

let animation = 0;
async function animateChain() {
  const model = currentModel();
  if (!model) return;
  clearInterval(animation);
  const steps = Math.max(20, Number($("steps").value));
  try {
    const chain = await postJson(`/v1/models/${model.id}/chain`, { label: state.label, count: 1, gibbs_steps: steps, frames: 40, seed: Math.floor(Math.random() * 1e9) });
    const [h, w] = chain.shape;
    const canvas = $("chain");
    const c = canvas.getContext("2d");
    const small = new ImageData(w, h);
    const tile = document.createElement("canvas");
    tile.width = w;
    tile.height = h;
    let i = 0;
    const show = () => {
      const frame = chain.frames[i];
      frame.images[0].forEach((p, j) => {
        const v = Math.round(255 * p);
        small.data.set([v, v, v, 255], 4 * j);
      });
      tile.getContext("2d").putImageData(small, 0, 0);
      c.imageSmoothingEnabled = false;
      c.drawImage(tile, 0, 0, canvas.width, canvas.height);
      $("chain-step").textContent = `Chain after ${frame.step} steps`;
      canvas.dataset.frames = String(i + 1);
      i += 1;
      if (i >= chain.frames.length) clearInterval(animation);
    };
    show();
    animation = setInterval(show, 120);
  } catch (e) {
    $("dream-status").textContent = e.message;
  }
}

$("dream").addEventListener("click", dream);
$("animate").addEventListener("click", animateChain);

// ---------------------------------------------------------------- inside

async function showFeatures() {
  const model = currentModel();
  if (!model || !model.image_shape) return;
  try {
    const count = Math.min(100, model.sizes[1] || 100);
    setImage($("features"), await imageUrl(`/v1/models/${model.id}/features.png?count=${count}`));
    $("features-caption").textContent = `First-layer receptive fields: the weights from the pixels into ${count} hidden units.`;
  } catch (e) {
    $("features").alt = `No features: ${e.message}`;
  }
}

function showCard(model) {
  const rows = [];
  if (model) {
    rows.push(["Name", model.name], ["Id", model.id], ["Layers", model.sizes.join(" – ") + (model.label_classes ? ` (+${model.label_classes} labels on top)` : "")]);
    rows.push(["Methods", model.methods.join(", ")]);
    for (const [k, v] of Object.entries(model.metrics)) {
      rows.push([k.replaceAll("_", " "), k.includes("error") ? `${(100 * v).toFixed(2)} %` : String(v)]);
    }
    const p = model.provenance;
    rows.push(["Trained on", `${p.train_examples} ${p.dataset} images, seed ${p.seed}, ${formatSeconds(p.train_seconds)}`]);
    if (model.spec && model.spec.finetune) rows.push(["Fine-tuning", model.spec.finetune.method]);
  }
  $("card").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    return [dt, dd];
  }));
}

// ---------------------------------------------------------------- tabs and start-up

function selectTab(tab) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (tab.id === "tab-inside") showFeatures();
  if (tab.id === "tab-dream" && !$("samples").dataset.url) dream();
  if (tab.id === "tab-train") loadJobs();
  history.replaceState(null, "", `#${tab.id.slice(4)}`);
}

const tabs = [...document.querySelectorAll('[role="tab"]')];
tabs.forEach((tab, i) => {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(i + step + tabs.length) % tabs.length];
    next.focus();
    selectTab(next);
  });
});

$("model").addEventListener("change", modelChanged);
$("refresh-models").addEventListener("click", () => loadModels());
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  sessionStorage.setItem("dbn-serve-key", state.key);
  $("key-form").hidden = true;
  loadModels();
  loadJobs();
});

clearPad();
labelButtons();
loadModels();
const start = tabs.find((t) => `#${t.id.slice(4)}` === location.hash);
if (start) selectTab(start);
