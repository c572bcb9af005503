// The page: draw a digit or drop an image -> POST .../uncertainty with return_samples and
// return_input -> what the model saw, what it says, and how much its dropout passes agree.
// Everything the page knows lives in this module; the API key is read from its field for each
// request and never written anywhere (no localStorage, sessionStorage or cookie).

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const DEBOUNCE_MS = 250; // after the last stroke, before asking
const MAX_RETRIES = 10; // 503s retried automatically per input, each after its Retry-After
const BRUSH = 18; // px on the 280 px pad: about MNIST's stroke width once fitted to 20x20

const state = {
  metadata: null, // GET /v1/models/{name}/versions/{v}
  input: null, // {kind: "drawing"} or {kind: "file", file}
  generation: 0, // bumped per request; an answer to an older one is dropped
  controller: null, // AbortController of the request in flight
  debounceTimer: 0,
  retryTimer: 0,
  retries: 0,
  answers: 0,
  previewUrl: null,
};

// ---- the drawing pad -------------------------------------------------------------------------

const pad = $("pad");
const ink = pad.getContext("2d");
let stroke = null; // the last point of the stroke being drawn, or null

function resetPad() {
  ink.fillStyle = "#fff"; // a light ground: the service inverts it into MNIST's dark one
  ink.fillRect(0, 0, pad.width, pad.height);
  ink.strokeStyle = "#000";
  ink.fillStyle = "#000";
  ink.lineWidth = BRUSH;
  ink.lineCap = "round";
  ink.lineJoin = "round";
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * pad.width) / box.width,
    ((event.clientY - box.top) * pad.height) / box.height,
  ];
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  clearTimeout(state.debounceTimer);
  if (state.input?.kind === "file") {
    resetPad(); // a new drawing replaces the uploaded image
    showUploadPreview(null);
  }
  stroke = padPoint(event);
  ink.beginPath();
  ink.arc(stroke[0], stroke[1], BRUSH / 2, 0, 2 * Math.PI);
  ink.fill();
});

pad.addEventListener("pointermove", (event) => {
  if (stroke === null) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  ink.beginPath();
  ink.moveTo(stroke[0], stroke[1]);
  for (const each of events.length ? events : [event]) {
    stroke = padPoint(each);
    ink.lineTo(stroke[0], stroke[1]);
  }
  ink.stroke();
});

function endStroke() {
  if (stroke === null) return;
  stroke = null;
  state.input = { kind: "drawing" };
  state.retries = 0;
  $("source").textContent = "Your drawing, sent as a PNG.";
  setAnswerState("loading"); // from the end of a stroke on: an answer is on its way
  clearTimeout(state.debounceTimer);
  state.debounceTimer = setTimeout(ask, DEBOUNCE_MS);
}

pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

// ---- uploads: the button and drag-and-drop ---------------------------------------------------

function showUploadPreview(file) {
  const preview = $("upload-preview");
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = file ? URL.createObjectURL(file) : null;
  preview.hidden = !file;
  if (file) {
    preview.src = state.previewUrl;
    preview.alt = `Uploaded image ${file.name}`;
  } else {
    preview.removeAttribute("src");
    preview.alt = "";
  }
}

function useFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showProblem(`${file.name} is not an image; drop a PNG, JPEG, BMP, GIF, TIFF or WebP file.`, "refused");
    return;
  }
  resetPad();
  showUploadPreview(file);
  state.input = { kind: "file", file };
  state.retries = 0;
  $("source").textContent = `Uploaded ${file.name} (${file.size.toLocaleString()} bytes), sent as it is.`;
  ask();
}

$("upload").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", (event) => {
  useFile(event.target.files[0]);
  event.target.value = ""; // choosing the same file again still counts as a change
});

const dropZone = $("drop-zone");
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  useFile(event.dataTransfer.files[0]);
});

$("clear").addEventListener("click", () => {
  clearTimeout(state.debounceTimer);
  clearTimeout(state.retryTimer);
  state.controller?.abort();
  state.generation += 1;
  state.input = null;
  resetPad();
  showUploadPreview(null);
  $("source").textContent = "Nothing sent yet.";
  $("result").hidden = true;
  $("ood-banner").hidden = true;
  hideProblem();
  setAnswerState("empty");
  $("status").textContent = "Draw a digit to ask the model.";
});

// ---- models, versions and the model card ----------------------------------------------------

const modelSelect = $("model");
const versionSelect = $("version");
let models = [];

async function loadModels() {
  let response;
  try {
    response = await fetch("/v1/models", { cache: "no-store", credentials: "omit" });
  } catch {
    return notReady("The service cannot be reached.", 5, loadModels);
  }
  const body = await readJson(response);
  if (!response.ok) {
    return notReady(`The service answered ${response.status}: ${errorMessage(body, response)}.`,
      retryAfter(response), loadModels);
  }
  models = body.models;
  if (!models.length) {
    return notReady("The service is not ready: it has no model loaded yet.", 3, loadModels);
  }
  hideProblem();
  modelSelect.replaceChildren(...models.map((m) => new Option(m.name, m.name)));
  modelSelect.value = models.some((m) => m.name === body.default_model) ? body.default_model : models[0].name;
  fillVersions();
  await loadMetadata();
}

function notReady(message, seconds, again) {
  showProblem(`${message} Checking again in ${seconds} s.`, "unavailable");
  setTimeout(again, seconds * 1000);
}

function fillVersions() {
  const model = models.find((m) => m.name === modelSelect.value);
  versionSelect.replaceChildren(
    ...model.versions
      .slice()
      .reverse()
      .map((v) => new Option(v === model.default_version ? `${v} (default)` : String(v), String(v))),
  );
  versionSelect.value = String(model.default_version);
}

async function loadMetadata() {
  const first = state.metadata === null;
  const url = `/v1/models/${encodeURIComponent(modelSelect.value)}/versions/${versionSelect.value}`;
  let response;
  try {
    response = await fetch(url, { cache: "no-store", credentials: "omit" });
  } catch {
    return notReady("The service cannot be reached.", 5, loadMetadata);
  }
  const body = await readJson(response);
  if (!response.ok) {
    return showProblem(`Could not read the model's metadata (${response.status}): ${errorMessage(body, response)}`, "refused");
  }
  state.metadata = body;
  showCard(body, `${url}/card/card.md`);
  const slider = $("samples");
  slider.max = String(Math.min(500, body.uncertainty.samples_max));
  if (first) slider.value = String(Math.min(Number(slider.max), body.uncertainty.samples_default));
  $("samples-value").textContent = slider.value;
  document.body.dataset.ready = "true";
  if (state.input) ask();
}

function showCard(metadata, cardUrl) {
  const metrics = metadata.metrics || {};
  const accuracy = metrics.test_accuracy_mc ?? metrics.test_accuracy;
  const ece = metrics.test_ece_mc ?? metrics.test_ece;
  const auroc = metrics.ood_auroc_mutual_information;
  const threshold = metadata.uncertainty.ood_threshold;
  $("card-accuracy").textContent = accuracy == null ? "not measured" : percent(accuracy);
  $("card-ece").textContent = ece == null ? "not measured" : percent(ece);
  $("card-auroc").textContent =
    auroc == null ? "not measured" : `${auroc.toFixed(3)} vs ${metrics.ood_dataset ?? "OOD set"}`;
  $("card-threshold").textContent = threshold == null ? "none (uncalibrated)" : `${threshold.toFixed(3)} nats`;
  const link = $("card-link");
  link.href = cardUrl;
  link.textContent = `Model card: ${metadata.name} v${metadata.version}`;
}

modelSelect.addEventListener("change", () => {
  fillVersions();
  loadMetadata();
});
versionSelect.addEventListener("change", loadMetadata);
$("samples").addEventListener("input", (event) => {
  $("samples-value").textContent = event.target.value;
});
$("samples").addEventListener("change", () => {
  if (!state.input) return;
  setAnswerState("loading");
  clearTimeout(state.debounceTimer);
  state.debounceTimer = setTimeout(ask, DEBOUNCE_MS);
});
$("settings").addEventListener("submit", (event) => {
  event.preventDefault(); // Enter in the key field asks again with the new key
  if (state.input) ask();
});
$("api-key").addEventListener("change", () => {
  if (state.input && $("answer").dataset.state === "error") ask();
});

// ---- asking the service ---------------------------------------------------------------------

async function ask() {
  if (!state.input || !state.metadata) return;
  clearTimeout(state.retryTimer);
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  const generation = ++state.generation;
  const samples = Number($("samples").value);
  const { name, version } = state.metadata;
  let url = `/v1/models/${encodeURIComponent(name)}/versions/${version}/uncertainty`;
  const init = { method: "POST", headers: {}, signal: controller.signal, credentials: "omit", cache: "no-store" };
  if (state.input.kind === "drawing") {
    const b64 = pad.toDataURL("image/png").split(",")[1];
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify({ instances: [{ b64 }], samples, return_samples: true, return_input: true });
  } else {
    const form = new FormData();
    form.append("file", state.input.file, state.input.file.name);
    init.body = form;
    url += `?samples=${samples}&return_samples=true&return_input=true`;
  }
  const key = $("api-key").value.trim();
  if (key) init.headers.Authorization = `Bearer ${key}`;

  setAnswerState("loading");
  $("status").textContent = `Asking ${name} v${version} for ${samples} dropout passes…`;
  const started = performance.now();
  let response;
  let body;
  try {
    response = await fetch(url, init);
    body = await readJson(response);
  } catch {
    if (controller.signal.aborted) return;
    setAnswerState("error");
    return showProblem("The service cannot be reached: is it still running?", "unreachable");
  }
  if (generation !== state.generation) return;
  if (response.ok) {
    state.retries = 0;
    hideProblem();
    render(body, performance.now() - started);
  } else {
    refused(response, body);
  }
}

function refused(response, body) {
  setAnswerState("error");
  const message = errorMessage(body, response);
  if (response.status === 401) {
    showProblem(
      `The API key is missing or wrong (401): ${message}. Enter the server's key in the “API key” field above; it stays in this tab only.`,
      "unauthorized",
    );
  } else if (response.status === 503) {
    const seconds = retryAfter(response);
    if (state.retries < MAX_RETRIES) {
      state.retries += 1;
      state.retryTimer = setTimeout(ask, seconds * 1000);
      showProblem(`The service is not ready or is overloaded (503): ${message}. Trying again in ${seconds} s.`, "unavailable");
    } else {
      showProblem(`The service is still not ready or overloaded (503): ${message}. Draw or upload again later.`, "unavailable");
    }
  } else {
    showProblem(`The service refused this input (${response.status}): ${message}`, "refused");
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

function errorMessage(body, response) {
  return body?.error?.message ?? `HTTP ${response.status} ${response.statusText}`.trim();
}

function retryAfter(response) {
  const seconds = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  return Number.isFinite(seconds) ? Math.min(Math.max(seconds, 1), 60) : 5;
}

function showProblem(message, kind) {
  const problem = $("problem");
  problem.textContent = message;
  problem.dataset.kind = kind;
  problem.hidden = false;
  $("status").textContent = "";
}

function hideProblem() {
  $("problem").hidden = true;
  delete $("problem").dataset.kind;
}

function setAnswerState(value) {
  const answer = $("answer");
  answer.dataset.state = value;
  answer.setAttribute("aria-busy", String(value === "loading"));
}

// ---- the answer -----------------------------------------------------------------------------

function render(body, elapsedMs) {
  const prediction = body.predictions[0];
  const threshold = state.metadata.uncertainty.ood_threshold;
  const classes = state.metadata.classes;
  const answer = $("answer");
  $("result").hidden = false;
  $("label").textContent = prediction.class_name;
  $("confidence").textContent = percent(prediction.confidence);
  $("answer-samples").textContent = String(body.samples);
  drawSeen(prediction.input);
  drawBars(prediction.probabilities, prediction.label, classes);
  drawSpread(prediction.sample_probabilities, prediction.probabilities, prediction.label, classes);
  setMeasure("predictive-entropy", prediction.predictive_entropy);
  setMeasure("expected-entropy", prediction.expected_entropy);
  setMeasure("mutual-information", prediction.mutual_information);
  drawMeasures(prediction, threshold, classes.length);

  $("ood-banner").hidden = !prediction.ood;
  answer.classList.toggle("ood", prediction.ood);
  $("ood-reason").textContent = prediction.ood
    ? `Mutual information ${prediction.mutual_information.toFixed(3)} nats is above this model's threshold of ${threshold.toFixed(3)}: its dropout passes disagree, as they rarely do on the digits it was trained on.`
    : "";
  const note = $("verdict-note");
  const [kind, text] = verdictNote(prediction, threshold);
  note.dataset.kind = kind;
  note.textContent = text;
  answer.dataset.label = String(prediction.label);
  answer.dataset.ood = String(prediction.ood);
  state.answers += 1;
  answer.dataset.answers = String(state.answers);
  setAnswerState("done");
  $("status").textContent =
    `${body.model.name} v${body.model.version}: ${body.samples} passes, seed ${body.seed}, ${Math.round(elapsedMs)} ms.`;
}

const UNSURE_BELOW = 0.8; // confidence under which an in-distribution answer is called unsure

function verdictNote(prediction, threshold) {
  if (prediction.ood) return ["ood", "The passes disagree: this input is unlike the training data."];
  if (threshold == null) return ["unknown", "This model has no calibrated OOD threshold to compare with."];
  if (prediction.confidence < UNSURE_BELOW) {
    return ["unsure", "Unsure: the passes agree with each other, but spread their probability over several classes (aleatoric uncertainty). Read this answer with care."];
  }
  return ["sure", "The dropout passes agree: mutual information is below the OOD threshold."];
}

function setMeasure(id, value) {
  const cell = $(id);
  cell.textContent = value.toFixed(3);
  cell.dataset.value = String(value);
}

function drawSeen(rows) {
  const seen = $("seen");
  const context = seen.getContext("2d");
  const image = context.createImageData(seen.width, seen.height);
  rows.flat().forEach((value, i) => {
    const level = Math.round(Math.min(Math.max(value, 0), 1) * 255);
    image.data.set([level, level, level, 255], i * 4);
  });
  context.putImageData(image, 0, 0);
}

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function drawBars(probabilities, label, classes) {
  const chart = $("bars");
  const [width, top, bottom] = [320, 14, 130];
  const slot = width / probabilities.length;
  const parts = [];
  probabilities.forEach((p, c) => {
    const height = Math.max(p * (bottom - top), 0.5);
    const bar = svg("rect", {
      class: c === label ? "bar predicted" : "bar",
      x: c * slot + slot * 0.15,
      y: bottom - height,
      width: slot * 0.7,
      height,
      "data-class": c,
      "data-probability": p,
    });
    bar.append(svg("title", {}, `${classes[c]}: ${percent(p)}`));
    parts.push(bar, svg("text", { class: "tick", x: c * slot + slot / 2, y: bottom + 14 }, classes[c]));
    if (p >= 0.01) {
      parts.push(svg("text", { class: "value", x: c * slot + slot / 2, y: bottom - height - 3 }, Math.round(p * 100)));
    }
  });
  parts.push(svg("line", { class: "axis", x1: 0, x2: width, y1: bottom, y2: bottom }));
  chart.replaceChildren(...parts);
  chart.setAttribute(
    "aria-label",
    `Mean probability per class: ${probabilities.map((p, c) => `${classes[c]} ${percent(p)}`).join(", ")}`,
  );
}

function drawSpread(samples, means, label, classes) {
  const chart = $("spread");
  const [left, right, rowHeight, top] = [22, 312, 21, 4];
  const x = (p) => left + p * (right - left);
  const parts = [];
  for (let c = 0; c < means.length; c += 1) {
    const middle = top + c * rowHeight + rowHeight / 2;
    parts.push(svg("rect", {
      class: c === label ? "row predicted" : "row", x: left, y: middle - rowHeight / 2 + 1,
      width: right - left, height: rowHeight - 2,
    }));
    parts.push(svg("text", { class: "tick", x: left - 6, y: middle + 4 }, classes[c]));
  }
  const dots = svg("g", { class: "dots" });
  samples.forEach((pass, t) => {
    pass.forEach((p, c) => {
      // a fixed jitter per pass, so dense clusters show as clusters and redraws do not shimmer
      const jitter = (((t * 7919) % 13) - 6) * 1.2;
      dots.append(svg("circle", { class: "dot", cx: x(p), cy: top + c * rowHeight + rowHeight / 2 + jitter, r: 2.2 }));
    });
  });
  parts.push(dots);
  means.forEach((p, c) => {
    const y = top + c * rowHeight;
    parts.push(svg("line", { class: "mean", x1: x(p), x2: x(p), y1: y + 2, y2: y + rowHeight - 2, "data-class": c }));
  });
  const axis = top + means.length * rowHeight + 2;
  for (const p of [0, 0.5, 1]) {
    parts.push(svg("text", { class: "tick", x: x(p), y: axis + 10 }, p === 0.5 ? "0.5" : String(p)));
  }
  chart.replaceChildren(...parts);
  chart.setAttribute(
    "aria-label",
    `${samples.length} dropout passes; per class, the spread of sampled probabilities. ` +
      means.map((p, c) => `${classes[c]}: mean ${percent(p)}`).join(", "),
  );
}

function drawMeasures(prediction, threshold, classCount) {
  const chart = $("measures-chart");
  const ceiling = Math.log(classCount); // the largest entropy there is: all classes equally likely
  const [left, right] = [98, 312];
  const x = (v) => left + (Math.min(v, ceiling) / ceiling) * (right - left);
  const rows = [
    ["predictive", prediction.predictive_entropy],
    ["expected", prediction.expected_entropy],
    ["mutual inf.", prediction.mutual_information],
  ];
  const parts = [];
  rows.forEach(([name, value], i) => {
    const y = 6 + i * 26;
    const high = i === 2 && prediction.ood;
    parts.push(svg("text", { class: "name", x: 0, y: y + 13 }, name));
    parts.push(svg("rect", { class: "track", x: left, y, width: right - left, height: 18 }));
    parts.push(svg("rect", { class: high ? "level high" : "level", x: left, y, width: Math.max(x(value) - left, 1), height: 18 }));
  });
  if (threshold != null) {
    const tx = x(threshold);
    parts.push(svg("line", { class: "threshold", x1: tx, x2: tx, y1: 54, y2: 80 }));
    parts.push(svg("text", { class: "threshold-label", x: tx + 3, y: 92 }, `OOD threshold ${threshold.toFixed(3)}`));
  }
  parts.push(svg("text", { class: "tick", x: right, y: 92, "text-anchor": "end" }, `ln ${classCount}`));
  chart.replaceChildren(...parts);
}

function percent(p) {
  return `${(p * 100).toFixed(p >= 0.9995 || p < 0.0005 ? 1 : 2)}%`;
}

resetPad();
loadModels();
