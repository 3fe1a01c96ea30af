// strata: the command line. Each command has its own flag table
// (base/flags.h); `strata COMMAND --help` prints it, `strata --help` lists
// the commands.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/flag_groups.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "kernels/backend_factory.h"
#include "model/checkpoint.h"
#include "model/make_model.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/bench.h"
#include "tools/bench_engine.h"
#include "tools/cluster.h"
#include "tools/generate.h"
#include "tools/load.h"
#include "tools/plan_command.h"
#include "tools/tokenize.h"
#include "worker/local_engine.h"
#include "worker/worker_options.h"

namespace strata::tools {
namespace {

using base::BoolFlag;
using base::ChoiceFlag;
using base::IntFlag;
using base::StringFlag;

const base::FlagTable& MakeModelFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata make-model --out DIR [flags]",
      "Writes a seeded random Llama-3-architecture checkpoint (Hugging Face layout).\n"
      "Shape flags override the preset's.",
      {{"model",
        {StringFlag("out", std::nullopt, "DIR", "the folder to write").Required(),
         StringFlag("preset", "tiny", "NAME", "tiny, 1b, 8b, 70b or 405b"),
         IntFlag("hidden", std::nullopt, 2, 1 << 16, "hidden size"),
         IntFlag("layers", std::nullopt, 1, 256, "decoder layers"),
         IntFlag("heads", std::nullopt, 1, 1024, "query heads"),
         IntFlag("kv-heads", std::nullopt, 1, 1024, "KV heads"),
         IntFlag("head-dim", std::nullopt, 2, 1024, "head dimension (default: hidden / heads when those are given)"),
         IntFlag("ffn", std::nullopt, 1, 1 << 20, "SwiGLU width"),
         IntFlag("vocab", std::nullopt, 16, 1 << 20, "vocabulary size"),
         ChoiceFlag("dtype", "bf16", {"bf16", "f32"}, "weight type"),
         IntFlag("seed", 0, 0, INT64_MAX, "the weights' random seed"),
         IntFlag("shards", 1, 1, 9999, "safetensors files"),
         BoolFlag("tie-embeddings", false, "lm_head shares the embedding table"),
         StringFlag("tokenizer", std::nullopt, "DIR", "copy tokenizer.json / tokenizer.model from this folder")}}});
  return *table;
}

// The preset, with the shape flags that were given over it.
absl::StatusOr<model::LlamaConfig> ShapeFrom(const base::ParsedFlags& f) {
  STRATA_ASSIGN_OR_RETURN(model::LlamaConfig c, model::LlamaPreset(f.String("preset")));
  auto take = [&f](const char* name, int64_t fallback) { return f.HasValue(name) ? f.Int(name) : fallback; };
  c.hidden_size = take("hidden", c.hidden_size);
  c.num_layers = take("layers", c.num_layers);
  c.num_heads = take("heads", c.num_heads);
  c.num_kv_heads = take("kv-heads", std::min(c.num_kv_heads, c.num_heads));
  const bool derive_head_dim = !f.IsSet("head-dim") && (f.IsSet("hidden") || f.IsSet("heads"));
  c.head_dim = take("head-dim", derive_head_dim ? c.hidden_size / c.num_heads : c.head_dim);
  c.intermediate_size = take("ffn", c.intermediate_size);
  c.vocab_size = take("vocab", c.vocab_size);
  if (c.vocab_size < 128256) {
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  }
  c.tie_word_embeddings = f.Bool("tie-embeddings");
  return c;
}

absl::Status MakeModel(const base::ParsedFlags& f) {
  model::MakeModelOptions o;
  STRATA_ASSIGN_OR_RETURN(o.config, ShapeFrom(f));
  const model::LlamaConfig& c = o.config;
  o.dtype = f.String("dtype") == "bf16" ? model::DType::kBF16 : model::DType::kF32;
  o.seed = static_cast<uint64_t>(f.Int("seed"));
  o.shards = static_cast<int>(f.Int("shards"));
  const std::string out = f.String("out"), tokenizer = f.String("tokenizer");
  if (!tokenizer.empty()) {
    // Checked before writing anything: the model must cover the tokenizer.
    STRATA_ASSIGN_OR_RETURN(auto tok, model::Tokenizer::Load(model::PosixFileSystem(), tokenizer));
    if (c.vocab_size < tok->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("--tokenizer has ", tok->vocab_size(), " tokens but --vocab is ",
                                                     c.vocab_size, "; use --vocab ", tok->vocab_size()));
    }
  }
  STRATA_RETURN_IF_ERROR(model::WriteRandomModel(model::PosixFileSystem(), out, o));
  if (!tokenizer.empty()) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const std::string src = tokenizer + "/" + name;
      if (!model::PosixFileSystem()->Exists(src)) continue;
      STRATA_ASSIGN_OR_RETURN(std::string bytes, model::PosixFileSystem()->ReadFile(src, 256ull << 20));
      std::ofstream(out + "/" + name, std::ios::binary) << bytes;
    }
  }
  std::fprintf(stderr, "wrote %s: %.3f B parameters, %s, %d file(s)%s\n", out.c_str(), c.ParameterCount() / 1e9,
               f.String("dtype").c_str(), o.shards, tokenizer.empty() ? "" : ", with the tokenizer");
  return absl::OkStatus();
}

const base::FlagTable& RunFlags() {
  const worker::EngineOptions engine;
  static const base::FlagTable* table = new base::FlagTable(
      "strata run --model DIR --prompt-ids 1,2,3 [flags]",
      "Greedy generation with the single-process engine; stops at an EOS token unless --ignore-eos.",
      {{"run",
        {StringFlag("model", std::nullopt, "DIR", "a Hugging Face model folder").Required(),
         base::IntListFlag("prompt-ids", std::nullopt, 0, INT32_MAX, "the prompt's token ids").Required(),
         IntFlag("max-tokens", 16, 1, 1 << 20, "tokens to generate"),
         IntFlag("position-offset", 0, 0, 1 << 24, "RoPE position of the first prompt token"),
         BoolFlag("ignore-eos", false, "generate --max-tokens even past EOS"),
         IntFlag("prefill-chunk", engine.prefill_chunk, 1, 1 << 20, "prompt tokens per step"),
         base::BlockSizeFlag(),
         BoolFlag("json", false, "print {\"tokens\": [...], \"finish_reason\": ...}"),
         BoolFlag("logits", false, "add the last step's top-10 logits"),
         StringFlag("logits-out", std::nullopt, "FILE", "write every step's float32 logits")}},
       base::BackendFlags()});
  return *table;
}

nlohmann::json TopLogits(const std::vector<float>& last) {
  std::vector<int32_t> order(last.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t k = std::min<size_t>(10, order.size());
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return last[a] > last[b] || (last[a] == last[b] && a < b); });
  nlohmann::json top = nlohmann::json::array();
  for (size_t i = 0; i < k; ++i) top.push_back({{"id", order[i]}, {"logit", last[order[i]]}});
  return top;
}

absl::Status Run(const base::ParsedFlags& f) {
  worker::EngineOptions eo;
  eo.prefill_chunk = f.Int("prefill-chunk");
  eo.block_size = f.Int("block-size");
  STRATA_ASSIGN_OR_RETURN(auto ckpt, model::Checkpoint::Open(model::PosixFileSystem(), f.String("model")));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend,
                          kernels::MakeBackend(worker::BackendChoiceFromFlags(f)));
  STRATA_ASSIGN_OR_RETURN(auto engine, worker::LocalEngine::Create(backend.get(), *ckpt, eo));
  worker::GenerateRequest req;
  const std::vector<int64_t>& ids = f.IntList("prompt-ids");
  req.prompt.assign(ids.begin(), ids.end());
  req.max_tokens = f.Int("max-tokens");
  req.position_offset = f.Int("position-offset");
  req.ignore_eos = f.Bool("ignore-eos");
  req.return_logits = f.Bool("logits") || f.IsSet("logits-out");
  STRATA_ASSIGN_OR_RETURN(worker::GenerateResult result, engine->Generate(req));

  if (f.IsSet("logits-out")) {
    const std::string path = f.String("logits-out");
    std::ofstream out(path, std::ios::binary);
    for (const auto& row : result.logits) {
      out.write(reinterpret_cast<const char*>(row.data()), row.size() * sizeof(float));
    }
    if (!out) return absl::InternalError(absl::StrCat("cannot write --logits-out ", path));
  }
  const nlohmann::json top =
      f.Bool("logits") && !result.logits.empty() ? TopLogits(result.logits.back()) : nlohmann::json::array();
  const double decode_tps = result.tokens.size() > 1 && result.decode_seconds > 0
                                ? (result.tokens.size() - 1) / result.decode_seconds
                                : 0.0;
  if (f.Bool("json")) {
    nlohmann::json j = {{"tokens", result.tokens}, {"finish_reason", result.finish_reason}};
    if (f.Bool("logits")) j["top_logits"] = top;
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << absl::StrJoin(result.tokens, " ") << std::endl;
    for (const auto& t : top) {
      std::cout << "  id " << t["id"].get<int>() << "  logit " << t["logit"].get<float>() << "\n";
    }
  }
  std::fprintf(stderr, "%zu prompt tokens in %.3f s, %zu generated (%s), decode %.2f tokens/s, %d thread(s), %s\n",
               req.prompt.size(), result.prefill_seconds, result.tokens.size(), result.finish_reason.c_str(),
               decode_tps, static_cast<int>(f.Int("threads")), backend->Name().c_str());
  return absl::OkStatus();
}

struct Command {
  const char* name;
  const base::FlagTable& (*flags)();
  absl::Status (*run)(const base::ParsedFlags&);
};

const Command kCommands[] = {
    {"make-model", MakeModelFlags, MakeModel}, {"run", RunFlags, Run},
    {"bench-engine", BenchEngineFlags, BenchEngine}, {"up", UpFlags, Up},
    {"generate", GenerateFlags, Generate}, {"tokenize", TokenizeFlags, Tokenize},
    {"detokenize", DetokenizeFlags, Detokenize}, {"bench", BenchFlags, Bench},
    {"load", LoadFlags, Load},
    {"plan", PlanFlags, PlanCommand},
};

// Each command and the first line of its summary.
std::string Usage() {
  std::string out = "usage: strata <command> [flags]   (strata <command> --help lists its flags)\ncommands:\n";
  for (const Command& c : kCommands) {
    const std::string& summary = c.flags().summary();
    absl::StrAppend(&out, "  ", c.name, std::string(14 - std::string(c.name).size(), ' '),
                    summary.substr(0, summary.find('\n')), "\n");
  }
  return out;
}

}  // namespace
}  // namespace strata::tools

int main(int argc, char** argv) {
  using strata::tools::kCommands;
  const std::string first = argc < 2 ? "" : argv[1];
  if (argc < 2 || first == "--help" || first == "-h" || (first == "help" && argc == 2)) {
    std::fputs(strata::tools::Usage().c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  // "strata help CMD" is "strata CMD --help".
  const std::string command = first == "help" ? argv[2] : first;
  std::vector<std::string> args(argv + 2, argv + argc);
  if (first == "help") args = {"--help"};
  for (const strata::tools::Command& c : kCommands) {
    if (command != c.name) continue;
    if (strata::base::WantsHelp(args)) {
      std::cout << c.flags().Help();
      return 0;
    }
    absl::Status s;
    absl::StatusOr<strata::base::ParsedFlags> flags = c.flags().Parse(args);
    s = flags.ok() ? c.run(*flags) : flags.status();
    if (s.ok()) return 0;
    std::fprintf(stderr, "strata %s: %s\n", command.c_str(), std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::fprintf(stderr, "strata: unknown command \"%s\"\n%s", command.c_str(), strata::tools::Usage().c_str());
  return 2;
}
