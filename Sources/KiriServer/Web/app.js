// Kiri's web page: a form for txt2img, a recipe runner with a Lua editor, live progress and previews from a job's
// Server-Sent Events, and a gallery of results. It speaks the server's own API (/kiri/v1, /sdapi/v1 for the lists).
"use strict";

const $ = (id) => document.getElementById(id);
let running = null;   // the job id in progress

// Every API call carries the token when the server asks for one (it is kept in this browser only).
function headers(extra = {}) {
  const token = localStorage.getItem("kiri-token");
  return token ? { ...extra, Authorization: "Bearer " + token } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) {
    $("token-box").hidden = false;
    throw new Error("this server needs a token: enter it above");
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(body.error || body || response.statusText);
  return body;
}

function fill(select, items, value) {
  select.replaceChildren(...items.map(([key, label]) => new Option(label, key)));
  if (value !== undefined) select.value = value;
}

async function loadLists() {
  const [models, samplers, schedulers, plugins, options] = await Promise.all([
    api("/sdapi/v1/sd-models"), api("/sdapi/v1/samplers"), api("/sdapi/v1/schedulers"), api("/kiri/v1/plugins"),
    api("/sdapi/v1/options"),
  ]);
  fill($("model"), models.map((m) => [m.title, m.title]), options.sd_model_checkpoint);
  // Kiri's plugin name is the value, A1111's name the label.
  fill($("sampler"), samplers.map((s) => [s.aliases[1], s.name]), "dpmpp_2m");
  fill($("schedule"), schedulers.filter((s) => s.name !== "automatic").map((s) => [s.name, s.label]), "karras");
  fill($("recipe-name"), plugins.recipes.map((r) => [r, r]), "txt2img");
  $("source-box").hidden = !plugins.allow_recipes;
}

function generateArguments() {
  const seed = Number($("seed").value);
  return {
    prompt: $("prompt").value, negative: $("negative").value, model: $("model").value, sampler: $("sampler").value,
    schedule: $("schedule").value, steps: Number($("steps").value), cfg: Number($("cfg").value),
    seed: seed >= 0 ? seed : Math.floor(Math.random() * 2 ** 32), width: Number($("width").value),
    height: Number($("height").value), batch: Number($("batch").value),
  };
}

function recipeArguments() {
  return $("recipe-arguments").value.split("\n").map((line) => line.trim()).filter((line) => line !== "");
}

// Starts a job and follows its events until it is done.
async function runJob(body, settings) {
  setBusy(true);
  $("log").textContent = "";
  $("log").hidden = true;
  $("preview").hidden = true;
  progress(0, "Queued…");
  try {
    const job = await api("/kiri/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    running = job.id;
    const done = await follow(job.id);
    if (done.status === "succeeded") {
      progress(1, `Done: ${done.outputs.length} file(s).`);
      for (const name of done.outputs.filter((n) => n.endsWith(".png")).reverse()) await addResult(done.id, name, settings);
    } else {
      progress(0, done.status === "cancelled" ? "Cancelled." : "Failed: " + done.error);
    }
  } catch (error) {
    progress(0, "Error: " + error.message);
  } finally {
    running = null;
    setBusy(false);
  }
}

// Reads the job's Server-Sent Events through fetch (EventSource cannot send the token).
async function follow(id) {
  const response = await fetch(`/kiri/v1/jobs/${id}/events`, { headers: headers() });
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
      const name = /^event: (.*)$/m.exec(block)?.[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null");
      if (name === "done") return data;
      onEvent(name, data);
    }
  }
  return api(`/kiri/v1/jobs/${id}`);
}

function onEvent(name, data) {
  if (name === "state") {
    progress(data.progress, data.status === "queued" ? `Queued (position ${data.queue_position ?? 0})…` : "Running…");
  } else if (name === "step") {
    const run = data.runs > 1 ? ` (run ${data.run} of ${data.runs})` : "";
    const sigma = data.sigma !== undefined ? `, σ ${data.sigma.toPrecision(3)}` : "";
    progress(data.progress, `Step ${data.step} of ${data.steps}${run}${sigma}`);
    if (data.preview) {
      $("preview").src = data.preview;
      $("preview").hidden = false;
    }
  } else if (name === "log") {
    $("log").hidden = false;
    $("log").textContent += data.line + "\n";
  }
}

function progress(fraction, message) {
  $("progress-bar").style.width = `${Math.round(fraction * 100)}%`;
  $("message").textContent = message;
}

function setBusy(busy) {
  for (const button of document.querySelectorAll("#run-generate, #run-recipe")) button.disabled = busy;
  for (const button of document.querySelectorAll("button.cancel")) button.disabled = !busy;
}

// A result in the gallery: the image, its A1111 parameters text (read from the PNG), reuse and download.
async function addResult(id, name, settings) {
  const url = `/kiri/v1/jobs/${id}/outputs/${encodeURIComponent(name)}`;
  const blob = await (await fetch(url, { headers: headers() })).blob();
  const objectURL = URL.createObjectURL(blob);
  const figure = $("result").content.firstElementChild.cloneNode(true);
  figure.querySelector("img").src = objectURL;
  for (const link of figure.querySelectorAll("a")) {
    link.href = objectURL;
    link.download = name;
  }
  figure.querySelector(".parameters").textContent = pngText(new Uint8Array(await blob.arrayBuffer())).parameters ?? name;
  const reuse = figure.querySelector(".reuse");
  if (settings) reuse.addEventListener("click", () => reuseSettings(settings));
  else reuse.hidden = true;
  $("gallery").prepend(figure);
}

// The tEXt chunks of a PNG (Latin-1 keyword, NUL, text), as Kiri writes its parameters.
function pngText(bytes) {
  const text = {};
  const view = new DataView(bytes.buffer);
  for (let at = 8; at + 12 <= bytes.length;) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (type === "tEXt") {
      const data = bytes.subarray(at + 8, at + 8 + length);
      const nul = data.indexOf(0);
      text[new TextDecoder("latin1").decode(data.subarray(0, nul))] = new TextDecoder("latin1").decode(data.subarray(nul + 1));
    } else if (type === "iTXt") {
      const data = bytes.subarray(at + 8, at + 8 + length);
      const nul = data.indexOf(0);
      // keyword NUL compression-flag method language NUL translated NUL text (uncompressed only)
      if (data[nul + 1] === 0) {
        let rest = nul + 3;
        rest = data.indexOf(0, rest) + 1;
        rest = data.indexOf(0, rest) + 1;
        text[new TextDecoder().decode(data.subarray(0, nul))] = new TextDecoder().decode(data.subarray(rest));
      }
    }
    if (type === "IEND") break;
    at += 12 + length;
  }
  return text;
}

function reuseSettings(settings) {
  for (const [key, value] of Object.entries(settings)) if ($(key)) $(key).value = value;
  showTab("generate");
}

function showTab(name) {
  for (const tab of ["generate", "recipe"]) {
    $(tab).hidden = tab !== name;
    $("tab-" + tab).classList.toggle("active", tab === name);
  }
}

$("tab-generate").addEventListener("click", () => showTab("generate"));
$("tab-recipe").addEventListener("click", () => showTab("recipe"));
$("token").addEventListener("change", () => {
  localStorage.setItem("kiri-token", $("token").value);
  loadLists().then(() => progress(0, "Ready.")).catch((error) => progress(0, "Error: " + error.message));
});
$("generate").addEventListener("submit", (event) => {
  event.preventDefault();
  const settings = generateArguments();
  runJob({ recipe: "txt2img", arguments: settings }, { ...settings, seed: settings.seed });
});
$("recipe").addEventListener("submit", (event) => {
  event.preventDefault();
  const source = $("recipe-source").value.trim();
  runJob(source ? { source, arguments: recipeArguments() } : { recipe: $("recipe-name").value, arguments: recipeArguments() });
});
for (const button of document.querySelectorAll("button.cancel")) {
  button.addEventListener("click", () => running && api(`/kiri/v1/jobs/${running}`, { method: "DELETE" }).catch(() => {}));
}
loadLists().catch((error) => progress(0, "Error: " + error.message));
