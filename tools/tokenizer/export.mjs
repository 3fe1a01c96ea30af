// Exports Llama 3's tokenizer from llama3-tokenizer-js (which bakes Meta's
// vocabulary and merges into its bundle) as a Hugging Face tokenizer.json
// and a tiktoken tokenizer.model, then encodes strata's corpus with the two
// Rust implementations, tiktoken (Meta's reference tokenizer's core) and
// Hugging Face tokenizers, checks that they agree, and writes
// expected.json: [{"name", "text", "ids"}].
//   node export.mjs OUT_DIR
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { corpus } from "./corpus.mjs";

const require = createRequire(import.meta.url);
const llama3 = (await import("llama3-tokenizer-js")).default;
const { Tiktoken } = require("tiktoken/lite");
const { Tokenizer } = require("tokenizers");

const out = process.argv[2];
if (!out) {
  console.error("usage: node export.mjs OUT_DIR");
  process.exit(2);
}
fs.mkdirSync(out, { recursive: true });

const PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// GPT-2's byte <-> printable-character map used by byte-level BPE vocabularies.
function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; ++b) bs.push(b);
  for (let b = 161; b <= 172; ++b) bs.push(b);
  for (let b = 174; b <= 255; ++b) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; ++b) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      ++n;
    }
  }
  const m = new Map();
  bs.forEach((b, i) => m.set(String.fromCodePoint(cs[i]), b));
  return m;
}

const vocab = llama3.vocabById;
if (vocab.length !== 128256) throw new Error(`expected 128256 tokens, got ${vocab.length}`);
const byteOf = bytesToUnicode();
const merges = [...llama3.merges.entries()].sort((a, b) => a[1] - b[1]).map((e) => e[0]);

// tokenizer.model: base64 of each token's bytes and its rank (= id), as Meta ships it.
const lines = [];
for (let id = 0; id < 128000; ++id) {
  const bytes = Buffer.from([...vocab[id]].map((ch) => {
    const b = byteOf.get(ch);
    if (b === undefined) throw new Error(`token ${id} has a character outside the byte alphabet`);
    return b;
  }));
  lines.push(`${bytes.toString("base64")} ${id}`);
}
fs.writeFileSync(path.join(out, "tokenizer.model"), lines.join("\n") + "\n");

const special = {};
for (let id = 128000; id < 128256; ++id) special[vocab[id]] = id;
const vocabObj = {};
for (let id = 0; id < 128000; ++id) vocabObj[vocab[id]] = id;
const tokenizerJson = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: Object.entries(special).map(([content, id]) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  })),
  normalizer: null,
  pre_tokenizer: {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: PATTERN }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  },
  post_processor: null,
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: vocabObj, merges,
  },
};
fs.writeFileSync(path.join(out, "tokenizer.json"), JSON.stringify(tokenizerJson));

const tik = new Tiktoken(lines.join("\n"), special, PATTERN);
// Hugging Face always splits added tokens out of raw text; strata (like
// tiktoken's encode_ordinary) encodes user text as plain text, so the
// comparison uses a copy without the added tokens.
const plainPath = path.join(out, "tokenizer.plain.json.tmp");
fs.writeFileSync(plainPath, JSON.stringify({ ...tokenizerJson, added_tokens: [] }));
const hf = Tokenizer.fromFile(plainPath);
const expected = [];
let disagreements = 0;
for (const [name, text] of corpus()) {
  const a = Array.from(tik.encode_ordinary(text));
  const enc = await hf.encode(text, null, { addSpecialTokens: false });
  const b = Array.from(enc.getIds());
  if (a.length !== b.length || a.some((x, i) => x !== b[i])) {
    ++disagreements;
    console.error(`tiktoken and tokenizers disagree on "${name}"`);
  }
  expected.push({ name, text, ids: a });
}
tik.free();
fs.unlinkSync(plainPath);
fs.writeFileSync(path.join(out, "expected.json"), JSON.stringify(expected));
console.log(`exported 128256 tokens and ${merges.length} merges; ${expected.length} corpus entries` +
            ` (${disagreements} disagreements between tiktoken and tokenizers) to ${out}`);
if (disagreements > 0) process.exit(1);
