// Drives strata's OpenAI-compatible HTTP API with the official `openai`
// client and checks it against the gRPC API (`strata generate`) on the same
// requests: plain and streamed completions and chat give the same tokens'
// text; stop strings end the text before them; logprobs and usage are
// there; a bad field is a 400 naming it. Starts `strata up` on a tiny model
// with the Llama 3 tokenizer and always stops it.
// Usage: node gateway_test.mjs BAZEL_BIN TOKENIZER_DIR
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";

const [bin, tokenizerDir] = process.argv.slice(2);
const strata = join(bin, "tools/strata");
const work = mkdtempSync(join(tmpdir(), "strata-openai-"));
const model = join(work, "model");
execFileSync(strata, ["make-model", "--out", model, "--preset", "tiny", "--dtype", "f32", "--seed", "1",
  "--vocab", "128256", "--tokenizer", tokenizerDir], { stdio: "ignore" });

let failures = 0;
function check(ok, what, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${ok ? "" : ": " + detail}`);
  if (!ok) failures++;
}

const ready = join(work, "ready.json");
const up = spawn(strata, ["up", "--model", model, "--stages", "2", "--tp", "1", "--kv-memory-mb", "64",
  "--kv-dtype", "f32", "--http-port", "0", "--ready-file", ready, "--bin-dir", bin], { stdio: "inherit" });
const stop = () => new Promise((done) => { up.once("exit", done); up.kill("SIGINT"); });

try {
  for (let i = 0; i < 900 && !existsSync(ready); i++) await new Promise((r) => setTimeout(r, 200));
  if (!existsSync(ready)) throw new Error("strata up did not come up");
  const info = JSON.parse(readFileSync(ready, "utf8"));
  const client = new OpenAI({ baseURL: `http://${info.http_address}/v1`, apiKey: "unused", maxRetries: 0 });
  const grpc = (args) => JSON.parse(execFileSync(strata, ["generate", "--server", info.address, "--json", ...args],
    { encoding: "utf8" }));

  // Completions, plain and streamed, against gRPC.
  const want = grpc(["--prompt", "Hello world", "--max-tokens", "8"]);
  const plain = await client.completions.create({ model: "model", prompt: "Hello world", max_tokens: 8,
    temperature: 0 });
  check(plain.choices[0].text === want.text, "completion text equals gRPC's", `${plain.choices[0].text} vs ${want.text}`);
  check(plain.choices[0].finish_reason === "length", "finish_reason length");
  check(plain.usage.completion_tokens === 8 && plain.usage.prompt_tokens === want.usage.prompt_tokens,
    "usage", JSON.stringify(plain.usage));
  let streamed = "", usage = null;
  for await (const c of await client.completions.create({ prompt: "Hello world", max_tokens: 8, temperature: 0,
    stream: true, stream_options: { include_usage: true } })) {
    if (c.choices.length) streamed += c.choices[0].text;
    if (c.usage) usage = c.usage;
  }
  check(streamed === want.text, "streamed completion equals gRPC's", `${streamed} vs ${want.text}`);
  check(usage && usage.completion_tokens === 8, "usage in the last streamed chunk", JSON.stringify(usage));

  // Chat, plain and streamed, against gRPC's chat.
  const wantChat = grpc(["--prompt", "Say hi", "--chat", "--max-tokens", "6"]);
  const chat = await client.chat.completions.create({ messages: [{ role: "user", content: "Say hi" }],
    max_tokens: 6, temperature: 0 });
  check(chat.choices[0].message.content === wantChat.text, "chat text equals gRPC's",
    `${chat.choices[0].message.content} vs ${wantChat.text}`);
  let chatStream = "", role = "";
  for await (const c of await client.chat.completions.create({ messages: [{ role: "user", content: "Say hi" }],
    max_tokens: 6, temperature: 0, stream: true })) {
    role = role || c.choices[0]?.delta?.role || "";
    chatStream += c.choices[0]?.delta?.content ?? "";
  }
  check(chatStream === wantChat.text && role === "assistant", "streamed chat equals gRPC's", chatStream);

  // A stop string: the text ends before it.
  const cut = want.text.slice(3, 6);
  const stopped = await client.completions.create({ prompt: "Hello world", max_tokens: 8, temperature: 0,
    stop: [cut] });
  check(stopped.choices[0].finish_reason === "stop" && want.text.startsWith(stopped.choices[0].text) &&
    !stopped.choices[0].text.includes(cut), "stop string", JSON.stringify(stopped.choices[0]));

  // Logprobs: the chosen token's and the top 2 for every token.
  const lp = await client.completions.create({ prompt: "Hello world", max_tokens: 4, temperature: 0, logprobs: 2 });
  const l = lp.choices[0].logprobs;
  check(l.tokens.length === 4 && l.token_logprobs.every((x) => x <= 0) &&
    l.top_logprobs.every((t) => Object.keys(t).length >= 1), "completion logprobs", JSON.stringify(l));
  const clp = await client.chat.completions.create({ messages: [{ role: "user", content: "Say hi" }],
    max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
  check(clp.choices[0].logprobs.content.length === 3 &&
    clp.choices[0].logprobs.content.every((t) => t.top_logprobs.length === 2), "chat logprobs");

  // A bad field: 400, OpenAI's error body, naming it.
  try {
    await client.completions.create({ prompt: "x", max_tokens: 0 });
    check(false, "max_tokens 0 refused", "accepted");
  } catch (e) {
    check(e.status === 400 && e.param === "max_tokens", "max_tokens 0 refused with 400 naming it",
      `${e.status} ${e.param} ${e.message}`);
  }
} catch (e) {
  check(false, "the test ran", e.stack);
} finally {
  await stop();
  rmSync(work, { recursive: true, force: true });
}
console.log(failures ? `openai gateway test: ${failures} failed` : "openai gateway test: all passed");
process.exit(failures ? 1 : 0);
