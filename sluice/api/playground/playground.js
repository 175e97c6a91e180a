// The playground: a chat with the served model through TGI's own routes. /chat_tokenize
// renders the conversation with the model's chat template; /generate_stream streams the answer
// with every sampling parameter TGI has (the chat route has no top-k); aborting the fetch
// closes the connection, which ends the request on the server.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = [];
let running = null; // the AbortController of the answer being streamed

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error || body.message || `${response.status}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadInfo() {
  const needsKey = document.body.dataset.needsKey === "true";
  $("key-needed").hidden = !needsKey || $("api-key").value.trim() !== "";
  if (needsKey && !$("api-key").value.trim()) {
    $("model-line").textContent = "enter the server's API key";
    return;
  }
  const response = await fetch("/info", { headers: headers() });
  $("key-needed").hidden = response.status !== 401;
  if (!response.ok) {
    $("model-line").textContent = `server answered ${response.status}`;
    return;
  }
  const info = await response.json();
  $("model-line").textContent =
    `${info.model_id} · ${info.model_dtype.replace("torch.", "")} on ${info.model_device_type}`;
  const rows = [
    ["model", info.model_id],
    ["dtype", info.model_dtype.replace("torch.", "")],
    ["device", info.model_device_type],
    ["shards", info.num_shard ?? 1],
    ["max input tokens", info.max_input_tokens],
    ["max total tokens", info.max_total_tokens],
    ["max concurrent", info.max_concurrent_requests],
    ["version", info.version],
  ];
  $("server-info").replaceChildren(
    ...rows.flatMap(([name, value]) => {
      const term = document.createElement("dt");
      const detail = document.createElement("dd");
      term.textContent = name;
      detail.textContent = String(value);
      return [term, detail];
    }),
  );
}

function parameters() {
  const number = (id) => $(id).value.trim() === "" ? null : Number($(id).value);
  const temperature = number("temperature") ?? 0;
  const result = { max_new_tokens: number("max-new-tokens") ?? 256, details: true };
  if (temperature > 0) {
    result.do_sample = true;
    result.temperature = temperature;
    const topP = number("top-p");
    if (topP !== null && topP < 1) result.top_p = topP;
  }
  const topK = number("top-k");
  if (topK) result.top_k = topK;
  const seed = number("seed");
  if (seed !== null) result.seed = seed;
  const stop = $("stop-sequences").value.split("\n").filter((line) => line !== "");
  if (stop.length) result.stop = stop;
  const grammarType = $("grammar-type").value;
  if (grammarType === "json") {
    result.grammar = { type: "json", value: JSON.parse($("grammar-value").value) };
  } else if (grammarType === "regex") {
    result.grammar = { type: "regex", value: $("grammar-value").value };
  }
  return result;
}

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  const stats = document.createElement("div");
  stats.className = "stats";
  item.append(label, body, stats);
  $("conversation").append(item);
  item.scrollIntoView({ block: "end" });
  return { item, body, stats };
}

function showError(view, message) {
  view.stats.textContent = message;
  view.stats.classList.add("error");
}

// Yields each SSE event's JSON as it arrives.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data:")) yield JSON.parse(line.slice(5));
      }
    }
  }
}

async function answer(view, signal) {
  let params;
  try {
    params = parameters();
  } catch (error) {
    showError(view, `The JSON schema does not parse: ${error.message}`);
    return null;
  }
  const rendered = await fetch("/chat_tokenize", {
    method: "POST", headers: headers(), signal,
    body: JSON.stringify({ model: "tgi", messages: conversation }),
  });
  if (!rendered.ok) return showError(view, await errorOf(rendered));
  const { templated_text: inputs } = await rendered.json();
  const started = performance.now();
  const response = await fetch("/generate_stream", {
    method: "POST", headers: headers(), signal,
    body: JSON.stringify({ inputs, parameters: params }),
  });
  if (!response.ok) return showError(view, await errorOf(response));
  let text = "";
  let firstAt = null;
  let tokens = 0;
  for await (const event of events(response)) {
    if (event.error) return showError(view, event.error);
    const now = performance.now();
    firstAt ??= now;
    tokens += 1;
    if (!event.token.special) text += event.token.text;
    view.body.textContent = text;
    const perSecond = tokens > 1 ? ((tokens - 1) * 1000) / (now - firstAt) : 0;
    view.stats.textContent =
      `TTFT ${Math.round(firstAt - started)} ms · ${perSecond.toFixed(1)} tokens/s · ${tokens} tokens`;
    if (event.generated_text !== null) {
      view.stats.textContent += ` · ${event.details.finish_reason}`;
      return text;
    }
  }
  return text;
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || running) return;
  $("prompt").value = "";
  conversation.push({ role: "user", content: prompt });
  addMessage("user", prompt);
  const view = addMessage("assistant", "");
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  try {
    const text = await answer(view, running.signal);
    if (typeof text === "string") conversation.push({ role: "assistant", content: text });
  } catch (error) {
    if (error.name === "AbortError") {
      view.stats.textContent += " · stopped";
      conversation.push({ role: "assistant", content: view.body.textContent });
    } else {
      showError(view, String(error));
    }
  } finally {
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("composer").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.shiftKey) return;
  event.preventDefault();
  $("composer").requestSubmit();
});
$("stop").addEventListener("click", () => running?.abort());
$("clear").addEventListener("click", () => {
  running?.abort();
  conversation.length = 0;
  $("conversation").replaceChildren();
});
$("grammar-type").addEventListener("change", () => {
  $("grammar-value").disabled = $("grammar-type").value === "";
});
$("api-key").addEventListener("change", loadInfo);
loadInfo();
