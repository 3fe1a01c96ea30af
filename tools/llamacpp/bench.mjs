// llama.cpp (prebuilt, from npm node-llama-cpp) on a GGUF: greedy tokens
// for a prompt, prompt throughput and decode throughput per thread count.
//   node bench.mjs MODEL.gguf --prompt-ids 1,2,3 --decode 64 --threads 1,2
import { getLlama } from "node-llama-cpp";
const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const modelPath = args[0];
const prompt = opt("--prompt-ids", "").split(",").filter(Boolean).map(Number);
const decode = Number(opt("--decode", "64"));
const threads = opt("--threads", "1").split(",").map(Number);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const results = [];
for (const t of threads) {
  const ctx = await model.createContext({ contextSize: prompt.length + decode + 16, batchSize: Math.max(prompt.length, 1), threads: t, sequences: 1 });
  const seq = ctx.getSequence();
  const tokens = [];
  const t0 = performance.now();
  let tFirst = 0;
  for await (const tok of seq.evaluate(prompt, { temperature: 0 })) {
    if (tokens.length === 0) tFirst = performance.now();
    tokens.push(tok);
    if (tokens.length > decode) break;
  }
  const tEnd = performance.now();
  results.push({ threads: t, tokens: tokens.slice(0, decode), prompt_tokens_per_s: prompt.length / ((tFirst - t0) / 1000),
                 decode_tokens_per_s: decode / ((tEnd - tFirst) / 1000) });
  await ctx.dispose();
}
console.log(JSON.stringify({ llama_cpp: llama.buildType, results }));
await model.dispose();
await llama.dispose();
