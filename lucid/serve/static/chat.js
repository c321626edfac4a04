// The chat page: keeps the conversation, streams each answer from /v1/chat/completions
// (server-sent events), and shows tokens per second. No libraries, nothing fetched elsewhere.
"use strict";
const log = document.getElementById("log");
const form = document.getElementById("ask");
const question = document.getElementById("question");
const stats = document.getElementById("stats");
const keyInput = document.getElementById("key");
let model = null;
let messages = [];

keyInput.value = localStorage.getItem("lucid-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("lucid-api-key", keyInput.value));

function headers() {
  const h = {"Content-Type": "application/json"};
  if (keyInput.value) h.Authorization = "Bearer " + keyInput.value;
  return h;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "message " + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

async function loadModel() {
  const response = await fetch("/v1/models", {headers: headers()});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  model = body.data[0].id;
  document.getElementById("model").textContent = model;
}

// Each "data: {...}" event of the stream, parsed, as it arrives.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function ask(text) {
  if (model === null) await loadModel();
  messages.push({role: "user", content: text});
  bubble("user", text);
  const answer = bubble("assistant", "");
  const start = performance.now();
  let first = null, pieces = 0, usage = null;
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(),
    body: JSON.stringify({model, messages, stream: true, stream_options: {include_usage: true},
                          temperature: Number(document.getElementById("temperature").value),
                          max_tokens: Number(document.getElementById("max-tokens").value)}),
  });
  if (!response.ok) {
    const body = await response.json();
    throw new Error(body.error ? body.error.message : response.statusText);
  }
  for await (const chunk of events(response)) {
    if (chunk.error) throw new Error(chunk.error.message);
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta && choice.delta.content) {
        if (first === null) first = performance.now();
        pieces += 1;
        answer.textContent += choice.delta.content;
        log.scrollTop = log.scrollHeight;
      }
    }
  }
  messages.push({role: "assistant", content: answer.textContent});
  const tokens = usage ? usage.completion_tokens : pieces;
  const seconds = (performance.now() - (first || start)) / 1000;
  stats.textContent = `${tokens} tokens, first after ${Math.round((first || start) - start)} ms, ` +
    `${tokens > 1 && seconds > 0 ? ((tokens - 1) / seconds).toFixed(1) : "–"} tokens/s`;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = question.value.trim();
  if (!text) return;
  question.value = "";
  document.getElementById("send").disabled = true;
  try {
    await ask(text);
  } catch (error) {
    bubble("error", "error: " + error.message);
    messages.pop();
  } finally {
    document.getElementById("send").disabled = false;
  }
});

question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

document.getElementById("reset").addEventListener("click", () => {
  messages = [];
  log.textContent = "";
  stats.textContent = "";
});

loadModel().catch((error) => bubble("error", "error: " + error.message));
