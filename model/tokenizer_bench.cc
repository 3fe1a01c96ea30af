// Tokenizer throughput on strata's corpus (and a few large inputs): encode
// and decode, in bytes of text per second. The tokenizer data comes from
// tools/tokenizer/make_data.sh:
//   bazel run -c opt //model:tokenizer_bench
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "benchmark/benchmark.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

std::string DataDir() {
  if (const char* d = std::getenv("STRATA_TOKENIZER_DIR")) return d;
  const char* srcdir = std::getenv("TEST_SRCDIR");
  if (srcdir != nullptr) return std::string(srcdir) + "/strata/third_party/llama3_tokenizer/data";
  return std::string(std::getenv("RUNFILES_DIR") ? std::getenv("RUNFILES_DIR") : ".") +
         "/strata/third_party/llama3_tokenizer/data";
}

const strata::model::Tokenizer& Tok() {
  static auto* t = [] {
    auto r = strata::model::Tokenizer::Load(strata::model::PosixFileSystem(), DataDir());
    if (!r.ok()) {
      std::fprintf(stderr, "%s (run tools/tokenizer/make_data.sh)\n", std::string(r.status().message()).c_str());
      std::exit(1);
    }
    return r->release();
  }();
  return *t;
}

const std::vector<std::string>& Corpus() {
  static auto* c = [] {
    std::ifstream in(DataDir() + "/expected.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto* v = new std::vector<std::string>;
    for (const auto& e : nlohmann::json::parse(ss.str())) v->push_back(e["text"].get<std::string>());
    return v;
  }();
  return *c;
}

void BM_EncodeCorpus(benchmark::State& state) {
  int64_t bytes = 0;
  for (auto _ : state) {
    for (const std::string& s : Corpus()) {
      auto ids = Tok().Encode(s);
      benchmark::DoNotOptimize(ids);
      bytes += static_cast<int64_t>(s.size());
    }
  }
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_EncodeCorpus)->Unit(benchmark::kMillisecond);

// English-like prose (the common case): the corpus's prose entries repeated.
void BM_EncodeProse(benchmark::State& state) {
  std::string text;
  while (text.size() < (1 << 20)) text += Corpus()[1] + " " + Corpus()[2] + "\n";
  for (auto _ : state) benchmark::DoNotOptimize(Tok().Encode(text));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(text.size()));
}
BENCHMARK(BM_EncodeProse)->Unit(benchmark::kMillisecond);

void BM_EncodeOneMegabyteWithoutWhitespace(benchmark::State& state) {
  std::string text;
  for (int i = 0; i < (1 << 20); ++i) text.push_back(static_cast<char>('a' + (i * 7) % 26));
  for (auto _ : state) benchmark::DoNotOptimize(Tok().Encode(text));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(text.size()));
}
BENCHMARK(BM_EncodeOneMegabyteWithoutWhitespace)->Unit(benchmark::kMillisecond);

void BM_DecodeProse(benchmark::State& state) {
  std::string text;
  while (text.size() < (1 << 20)) text += Corpus()[1] + " " + Corpus()[2] + "\n";
  const auto ids = *Tok().Encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(Tok().Decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(text.size()));
}
BENCHMARK(BM_DecodeProse)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
