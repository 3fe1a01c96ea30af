// strata: the command line.
//   strata make-model --out DIR [--preset tiny|1b] [shape flags] [--dtype bf16|f32]
//                     [--seed N] [--shards N] [--tie-embeddings]
//   strata run --model DIR --prompt-ids 1,2,3 --max-tokens N [--threads N] [--json]
//              [--logits] [--logits-out FILE] [--position-offset N] [--ignore-eos]
//              [--backend cpu|reference|cuda] [--isa auto|avx512bf16|avx512|avx2|portable]
//              [--kv-dtype bf16|f32] [--prefill-chunk N] [--block-size N]
//   strata bench-engine --model DIR [--threads N] [--isa ...] [--kv-dtype ...]
//              [--prompt-tokens N] [--decode-tokens N] [--batches 1,4,16] [--rounds N] [--json]
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/checkpoint.h"
#include "model/make_model.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"
#include "tools/backend_factory.h"
#include "tools/bench_engine.h"
#include "tools/cluster.h"
#include "tools/tokenize.h"
#include "tools/flags.h"
#include "worker/local_engine.h"

namespace strata::tools {
namespace {

constexpr char kUsage[] =
    "usage: strata <command> [flags]\n"
    "commands:\n"
    "  make-model  --out DIR [--preset tiny|1b] [--hidden N --layers N --heads N --kv-heads N\n"
    "              --head-dim N --ffn N --vocab N] [--dtype bf16|f32] [--seed N] [--shards N]\n"
    "              [--tie-embeddings] [--tokenizer DIR]\n"
    "              writes a seeded random Llama-3-architecture checkpoint (Hugging Face layout)\n"
    "  run         --model DIR --prompt-ids 1,2,3 --max-tokens N [--threads N] [--json]\n"
    "              [--logits] [--logits-out FILE] [--position-offset N] [--ignore-eos]\n"
    "              [--backend cpu|reference|cuda] [--isa auto|avx512bf16|avx512|avx2|portable]\n"
    "              [--kv-dtype bf16|f32] [--prefill-chunk N] [--block-size N]\n"
    "              greedy generation with the single-process engine (default backend: cpu)\n"
    "  bench-engine --model DIR [--threads N] [--isa ...] [--kv-dtype ...] [--prompt-tokens N]\n"
    "              [--decode-tokens N] [--batches 1,4,16] [--rounds N] [--json]\n"
    "              prompt and decode throughput against this machine's read bandwidth and\n"
    "              FMA peak, measured in the same run\n"
    "  up          [--model DIR] [--stages S] [--tp T] [--replicas R] [--port P] [--transport shm|tcp]\n"
    "              [--backend cpu|reference|cuda] [--threads N] [--isa ...] [--kv-dtype bf16|f32]\n"
    "              [--kv-memory-mb MB] [--block-size N] [--max-tokens-per-step N] [--metrics-port P]\n"
    "              [--log-dir DIR] [--bin-dir DIR] [--ready-file PATH] [--timeout-s N]\n"
    "              [--kv-blocks N] [--max-queue N] [--heartbeat-ms MS] [--down-after-ms MS]\n"
    "              a router and S x T x R workers on this host; prints the address once healthy;\n"
    "              Ctrl-C drains and stops everything (no --model: the tiny test model)\n"
    "  generate    --server HOST:PORT (--prompt-ids 1,2,3 | --prompt TEXT [--chat]) [--stop STR]\n"
    "              [--max-tokens N] [--temperature T]\n"
    "              [--top-k K] [--top-p P] [--seed N] [--ignore-eos] [--logprobs N] [--priority N]\n"
    "              [--request-id ID] [--timeout-ms MS] [--json] [--stream]\n"
    "              one Generate call: the token ids and the finish reason\n"
    "  tokenize    --model DIR (--text T | --file F) [--chat] [--special] [--json]\n"
    "              Llama 3 token ids of the text (--chat: as a user turn of the chat format;\n"
    "              --special: special-token strings become their ids)\n"
    "  detokenize  --model DIR --ids 1,2,3 [--json]\n"
    "              the text of token ids\n";

absl::Status MakeModel(const std::vector<std::string>& args) {
  STRATA_ASSIGN_OR_RETURN(
      Flags f, Flags::Parse(args,
                            {"out", "preset", "hidden", "layers", "heads", "kv-heads", "head-dim",
                             "ffn", "vocab", "dtype", "seed", "shards", "tie-embeddings", "tokenizer"},
                            {"tie-embeddings"}));
  if (!f.Has("out")) return absl::InvalidArgumentError("--out is required");
  STRATA_ASSIGN_OR_RETURN(model::LlamaConfig c, model::LlamaPreset(f.GetString("preset", "tiny")));
  STRATA_ASSIGN_OR_RETURN(c.hidden_size, f.GetInt("hidden", c.hidden_size, 2, 1 << 16));
  STRATA_ASSIGN_OR_RETURN(c.num_layers, f.GetInt("layers", c.num_layers, 1, 256));
  STRATA_ASSIGN_OR_RETURN(c.num_heads, f.GetInt("heads", c.num_heads, 1, 1024));
  STRATA_ASSIGN_OR_RETURN(c.num_kv_heads, f.GetInt("kv-heads", std::min(c.num_kv_heads, c.num_heads), 1, 1024));
  const int64_t default_head_dim = f.Has("head-dim") || !(f.Has("hidden") || f.Has("heads"))
                                       ? c.head_dim
                                       : c.hidden_size / c.num_heads;
  STRATA_ASSIGN_OR_RETURN(c.head_dim, f.GetInt("head-dim", default_head_dim, 2, 1024));
  STRATA_ASSIGN_OR_RETURN(c.intermediate_size, f.GetInt("ffn", c.intermediate_size, 1, 1 << 20));
  STRATA_ASSIGN_OR_RETURN(c.vocab_size, f.GetInt("vocab", c.vocab_size, 16, 1 << 20));
  if (c.vocab_size < 128256) {
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  }
  c.tie_word_embeddings = f.GetBool("tie-embeddings");
  model::MakeModelOptions o;
  o.config = c;
  STRATA_ASSIGN_OR_RETURN(const std::string dtype, f.GetChoice("dtype", "bf16", {"bf16", "f32"}));
  o.dtype = dtype == "bf16" ? model::DType::kBF16 : model::DType::kF32;
  STRATA_ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed", 0, 0, INT64_MAX));
  o.seed = static_cast<uint64_t>(seed);
  STRATA_ASSIGN_OR_RETURN(int64_t shards, f.GetInt("shards", 1, 1, 9999));
  o.shards = static_cast<int>(shards);
  const std::string out = f.GetString("out", "");
  if (f.Has("tokenizer")) {
    // Checked before writing anything: the model must cover the tokenizer.
    STRATA_ASSIGN_OR_RETURN(auto tok, model::Tokenizer::Load(model::PosixFileSystem(), f.GetString("tokenizer", "")));
    if (c.vocab_size < tok->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("--tokenizer has ", tok->vocab_size(), " tokens but --vocab is ",
                                                     c.vocab_size, "; use --vocab ", tok->vocab_size()));
    }
  }
  STRATA_RETURN_IF_ERROR(model::WriteRandomModel(model::PosixFileSystem(), out, o));
  if (f.Has("tokenizer")) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const std::string src = f.GetString("tokenizer", "") + "/" + name;
      if (!model::PosixFileSystem()->Exists(src)) continue;
      STRATA_ASSIGN_OR_RETURN(std::string bytes, model::PosixFileSystem()->ReadFile(src, 256ull << 20));
      std::ofstream(out + "/" + name, std::ios::binary) << bytes;
    }
  }
  std::fprintf(stderr, "wrote %s: %.3f B parameters, %s, %d file(s)%s\n", out.c_str(),
               c.ParameterCount() / 1e9, dtype.c_str(), o.shards, f.Has("tokenizer") ? ", with the tokenizer" : "");
  return absl::OkStatus();
}

absl::Status Run(const std::vector<std::string>& args) {
  STRATA_ASSIGN_OR_RETURN(
      Flags f, Flags::Parse(args,
                            {"model", "prompt-ids", "max-tokens", "threads", "json", "logits",
                             "logits-out", "position-offset", "ignore-eos", "backend", "isa",
                             "kv-dtype", "prefill-chunk", "block-size"},
                            {"json", "logits", "ignore-eos"}));
  if (!f.Has("model")) return absl::InvalidArgumentError("--model is required");
  if (!f.Has("prompt-ids")) return absl::InvalidArgumentError("--prompt-ids is required");
  STRATA_ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", 1, 1, 1024));
  STRATA_ASSIGN_OR_RETURN(int64_t max_tokens, f.GetInt("max-tokens", 16, 1, 1 << 20));
  STRATA_ASSIGN_OR_RETURN(int64_t offset, f.GetInt("position-offset", 0, 0, 1 << 24));
  STRATA_ASSIGN_OR_RETURN(std::vector<int64_t> ids, f.GetIntList("prompt-ids", 0, INT32_MAX));
  worker::EngineOptions eo;
  STRATA_ASSIGN_OR_RETURN(eo.prefill_chunk, f.GetInt("prefill-chunk", eo.prefill_chunk, 1, 1 << 20));
  STRATA_ASSIGN_OR_RETURN(eo.block_size, f.GetInt("block-size", eo.block_size, 1, 4096));

  STRATA_ASSIGN_OR_RETURN(auto ckpt, model::Checkpoint::Open(model::PosixFileSystem(), f.GetString("model", "")));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend, MakeBackend(f));
  STRATA_ASSIGN_OR_RETURN(auto engine, worker::LocalEngine::Create(backend.get(), *ckpt, eo));
  worker::GenerateRequest req;
  req.prompt.assign(ids.begin(), ids.end());
  req.max_tokens = max_tokens;
  req.position_offset = offset;
  req.ignore_eos = f.GetBool("ignore-eos");
  req.return_logits = f.GetBool("logits") || f.Has("logits-out");
  STRATA_ASSIGN_OR_RETURN(worker::GenerateResult result, engine->Generate(req));

  if (f.Has("logits-out")) {
    const std::string path = f.GetString("logits-out", "");
    std::ofstream out(path, std::ios::binary);
    for (const auto& row : result.logits) {
      out.write(reinterpret_cast<const char*>(row.data()), row.size() * sizeof(float));
    }
    if (!out) return absl::InternalError(absl::StrCat("cannot write --logits-out ", path));
  }
  nlohmann::json top = nlohmann::json::array();
  if (f.GetBool("logits") && !result.logits.empty()) {
    const std::vector<float>& last = result.logits.back();
    std::vector<int32_t> order(last.size());
    std::iota(order.begin(), order.end(), 0);
    const size_t k = std::min<size_t>(10, order.size());
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return last[a] > last[b] || (last[a] == last[b] && a < b); });
    for (size_t i = 0; i < k; ++i) top.push_back({{"id", order[i]}, {"logit", last[order[i]]}});
  }
  const double decode_tps = result.tokens.size() > 1 && result.decode_seconds > 0
                                ? (result.tokens.size() - 1) / result.decode_seconds
                                : 0.0;
  if (f.GetBool("json")) {
    nlohmann::json j = {{"tokens", result.tokens}, {"finish_reason", result.finish_reason}};
    if (f.GetBool("logits")) j["top_logits"] = top;
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << absl::StrJoin(result.tokens, " ") << std::endl;
    for (const auto& t : top) {
      std::cout << "  id " << t["id"].get<int>() << "  logit " << t["logit"].get<float>() << "\n";
    }
  }
  std::fprintf(stderr, "%zu prompt tokens in %.3f s, %zu generated (%s), decode %.2f tokens/s, %d thread(s), %s\n",
               req.prompt.size(), result.prefill_seconds, result.tokens.size(),
               result.finish_reason.c_str(), decode_tps, static_cast<int>(threads), backend->Name().c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata::tools

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "help") {
    std::fputs(strata::tools::kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  absl::Status s;
  if (command == "make-model") {
    s = strata::tools::MakeModel(args);
  } else if (command == "run") {
    s = strata::tools::Run(args);
  } else if (command == "bench-engine") {
    s = strata::tools::BenchEngine(args);
  } else if (command == "up") {
    s = strata::tools::Up(args);
  } else if (command == "generate") {
    s = strata::tools::Generate(args);
  } else if (command == "tokenize") {
    s = strata::tools::Tokenize(args);
  } else if (command == "detokenize") {
    s = strata::tools::Detokenize(args);
  } else {
    std::fprintf(stderr, "strata: unknown command \"%s\"\n%s", command.c_str(), strata::tools::kUsage);
    return 2;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "strata %s: %s\n", command.c_str(), std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
