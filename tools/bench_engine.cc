#include "tools/bench_engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "base/flag_groups.h"
#include "base/status_macros.h"
#include "kernels/backend_factory.h"
#include "kernels/cpu/roofline.h"
#include "model/checkpoint.h"
#include "nlohmann/json.hpp"
#include "worker/local_engine.h"
#include "worker/stage_executor.h"
#include "worker/worker_options.h"

namespace strata::tools {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

const base::FlagTable& BenchEngineFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata bench-engine --model DIR [flags]",
      "Prompt and decode throughput of the single-process engine's step loop.\n"
      "Each is reported against its own ceiling, measured in the same run: decode against the read bandwidth,\n"
      "the prompt against the FMA, bf16 dot and AMX tile peaks.",
      {{"bench-engine",
        {base::StringFlag("model", std::nullopt, "DIR", "a Hugging Face model folder").Required(),
         base::IntFlag("prompt-tokens", 128, 1, 1 << 16, "tokens of the prompt step"),
         base::IntFlag("decode-tokens", 64, 1, 1 << 16, "decode steps per batch"),
         base::IntListFlag("batches", "1,4,16", 1, 1024, "decode batch sizes"),
         base::IntFlag("rounds", 3, 1, 100, "interleaved rounds per batch; the fastest is kept"),
         base::BoolFlag("json", false, "print the report as one JSON line")}},
       base::BackendFlags()});
  return *table;
}

absl::Status BenchEngine(const base::ParsedFlags& f) {
  const int64_t threads = f.Int("threads");
  const int64_t prompt_tokens = f.Int("prompt-tokens");
  const int64_t decode_tokens = f.Int("decode-tokens");
  const int64_t rounds = f.Int("rounds");
  const std::vector<int64_t> batches = f.IntList("batches");
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend,
                          kernels::MakeBackend(worker::BackendChoiceFromFlags(f)));
  STRATA_ASSIGN_OR_RETURN(auto ckpt, model::Checkpoint::Open(model::PosixFileSystem(), f.String("model")));
  const model::LlamaConfig& c = ckpt->config();
  if (prompt_tokens + decode_tokens > c.max_position_embeddings) {
    return absl::InvalidArgumentError("--prompt-tokens + --decode-tokens exceed the model's context");
  }

  // Ceilings first, on the same threads. The read bandwidth is measured
  // again before every round of decoding and the highest value kept: the
  // floor is then the lowest seen, which is the strict reading.
  double read_bw = kernels::cpu::MeasureReadBandwidth(static_cast<int>(threads));
  const double fma_peak = kernels::cpu::MeasureFmaPeak(static_cast<int>(threads));
  const double bf16_peak = kernels::cpu::MeasureBf16DotPeak(static_cast<int>(threads));
  const double amx_peak = kernels::cpu::MeasureAmxPeak(static_cast<int>(threads));

  STRATA_ASSIGN_OR_RETURN(auto ex, worker::StageExecutor::Load(backend.get(), *ckpt,
                                                              worker::StageSpec::Whole(c)));
  const int64_t block_size = 16;
  const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  const int64_t blocks_per_seq = (prompt_tokens + decode_tokens + block_size - 1) / block_size;
  STRATA_ASSIGN_OR_RETURN(auto cache, backend->AllocateKvCache(ex->KvShape(max_batch * blocks_per_seq, block_size)));

  auto prompt_of = [&](int64_t seq) {
    std::vector<int32_t> p(prompt_tokens);
    for (int64_t i = 0; i < prompt_tokens; ++i) p[i] = static_cast<int32_t>((i * 131 + seq * 17 + 7) % c.vocab_size);
    return p;
  };
  auto table_of = [&](int64_t seq) {
    std::vector<int32_t> t(blocks_per_seq);
    for (int64_t b = 0; b < blocks_per_seq; ++b) t[b] = static_cast<int32_t>(seq * blocks_per_seq + b);
    return t;
  };

  // Parameters a token touches: everything but the embedding table (one
  // row); bytes as stored.
  const double param_bytes = static_cast<double>(ex->weight_bytes());
  const double bytes_per_param = param_bytes / static_cast<double>(c.ParameterCount());
  const double embed_bytes = static_cast<double>(c.vocab_size) * c.hidden_size * bytes_per_param;
  const double streamed_bytes = c.tie_word_embeddings ? param_bytes : param_bytes - embed_bytes;
  const double matmul_params = streamed_bytes / bytes_per_param;

  // Prompt processing: one sequence, the whole prompt in one step.
  std::vector<float> out;
  double prefill_s = 1e30;
  for (int rep = 0; rep < 2; ++rep) {
    kernels::StepLayout l;
    l.sequences = {kernels::SequenceChunk{static_cast<int32_t>(prompt_tokens), 0, 0, table_of(0)}};
    const auto t0 = Clock::now();
    STRATA_RETURN_IF_ERROR(ex->Forward(l, prompt_of(0), {}, {prompt_tokens - 1}, cache.get(), &out));
    prefill_s = std::min(prefill_s, Since(t0));
  }
  // Every product runs on all prompt rows except the lm_head (the last row only).
  const double lm_head_params = static_cast<double>(c.vocab_size) * c.hidden_size;
  const double prefill_flops = 2.0 * (matmul_params - lm_head_params) * prompt_tokens + 2.0 * lm_head_params +
                               4.0 * c.num_layers * c.num_heads * c.head_dim * (prompt_tokens * (prompt_tokens + 1) / 2.0);

  nlohmann::json result = {{"backend", backend->Name()},
                           {"threads", threads},
                           {"read_bandwidth_gbps", read_bw / 1e9},
                           {"fma_peak_gflops", fma_peak / 1e9},
                           {"weight_bytes", param_bytes},
                           {"prompt_tokens", prompt_tokens},
                           {"prefill_tokens_per_s", prompt_tokens / prefill_s},
                           {"prefill_gflops", prefill_flops / prefill_s / 1e9},
                           {"bf16_dot_peak_gflops", bf16_peak / 1e9},
                           {"prefill_of_fma_peak", prefill_flops / prefill_s / fma_peak},
                           {"amx_peak_gflops", amx_peak / 1e9}};
  // Each path's products against their own instruction's peak: vdpbf16ps
  // for avx512bf16, the register-only tile loop for amx.
  const bool bf16_path = backend->Name() == "cpu-avx512bf16";
  const bool amx_path = backend->Name() == "cpu-amx";
  if (bf16_path && bf16_peak > 0) result["prefill_of_bf16_dot_peak"] = prefill_flops / prefill_s / bf16_peak;
  if (amx_path && amx_peak > 0) result["prefill_of_amx_peak"] = prefill_flops / prefill_s / amx_peak;
  nlohmann::json decode = nlohmann::json::array();
  double batch1_tps = 0;
  // Prefill every sequence of the largest batch once (untimed): a batch of
  // B decodes sequences 0..B-1 from their prompts, every round from the
  // same first tokens (later rounds rewrite the same KV positions).
  std::vector<int32_t> first(max_batch);
  {
    kernels::StepLayout l;
    std::vector<int32_t> ids;
    std::vector<int64_t> logit_rows;
    for (int64_t s = 0; s < max_batch; ++s) {
      l.sequences.push_back(kernels::SequenceChunk{static_cast<int32_t>(prompt_tokens), 0, 0, table_of(s)});
      const auto p = prompt_of(s);
      ids.insert(ids.end(), p.begin(), p.end());
      logit_rows.push_back((s + 1) * prompt_tokens - 1);
    }
    STRATA_RETURN_IF_ERROR(ex->Forward(l, ids, {}, logit_rows, cache.get(), &out));
    for (int64_t s = 0; s < max_batch; ++s) first[s] = worker::Argmax(out.data() + s * c.vocab_size, c.vocab_size);
  }
  // Rounds interleave the batch sizes, so a slow spell of the machine (this
  // VM's bandwidth moves within minutes) does not land on one batch only;
  // each batch keeps its fastest round.
  std::vector<double> best_s(batches.size(), 1e30);
  for (int64_t round = 0; round < rounds; ++round) {
    if (round > 0) read_bw = std::max(read_bw, kernels::cpu::MeasureReadBandwidth(static_cast<int>(threads)));
    for (size_t bi = 0; bi < batches.size(); ++bi) {
      const int64_t batch = batches[bi];
      std::vector<int32_t> next(first.begin(), first.begin() + batch);
      const auto t0 = Clock::now();
      for (int64_t step = 0; step < decode_tokens; ++step) {
        kernels::StepLayout d;
        std::vector<int64_t> rows(batch);
        for (int64_t s = 0; s < batch; ++s) {
          d.sequences.push_back(
              kernels::SequenceChunk{1, static_cast<int32_t>(prompt_tokens + step), 0, table_of(s)});
          rows[s] = s;
        }
        STRATA_RETURN_IF_ERROR(ex->Forward(d, next, {}, rows, cache.get(), &out));
        for (int64_t s = 0; s < batch; ++s) next[s] = worker::Argmax(out.data() + s * c.vocab_size, c.vocab_size);
      }
      best_s[bi] = std::min(best_s[bi], Since(t0));
    }
  }
  result["read_bandwidth_gbps"] = read_bw / 1e9;
  result["rounds"] = rounds;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const int64_t batch = batches[bi];
    const double secs = best_s[bi];
    const double tps = batch * decode_tokens / secs;
    if (batch == 1) batch1_tps = tps;
    // The floor of one step: weights once, plus every sequence's KV.
    const double avg_context = prompt_tokens + decode_tokens / 2.0;
    const double kv_bytes = batch * avg_context * c.num_layers * 2.0 * c.num_kv_heads * c.head_dim * 2;
    const double floor_s = (streamed_bytes + kv_bytes) / read_bw;
    const double step_s = secs / decode_tokens;
    decode.push_back({{"batch", batch},
                      {"tokens_per_s", tps},
                      {"step_ms", step_s * 1e3},
                      {"floor_ms", floor_s * 1e3},
                      {"of_roofline", floor_s / step_s},
                      {"vs_batch1", batch1_tps > 0 ? tps / batch1_tps : 0}});
  }
  result["decode"] = decode;
  if (f.Bool("json")) {
    std::cout << result.dump() << std::endl;
    return absl::OkStatus();
  }
  std::printf("backend %s, %lld thread(s); read bandwidth %.1f GB/s (best of %lld), f32 FMA peak %.1f GFLOP/s, "
              "bf16 dot peak %.1f GFLOP/s, AMX peak %.1f GFLOP/s (measured now)\n",
              backend->Name().c_str(), static_cast<long long>(threads), read_bw / 1e9,
              static_cast<long long>(rounds), fma_peak / 1e9, bf16_peak / 1e9, amx_peak / 1e9);
  std::printf("weights streamed per step: %.2f GB\n", streamed_bytes / 1e9);
  std::printf("prompt %lld tokens: %.1f tokens/s, %.1f GFLOP/s = %.0f%% of the f32 FMA peak",
              static_cast<long long>(prompt_tokens), prompt_tokens / prefill_s, prefill_flops / prefill_s / 1e9,
              100.0 * prefill_flops / prefill_s / fma_peak);
  if (bf16_path && bf16_peak > 0) {
    std::printf(", %.0f%% of the bf16 dot peak", 100.0 * prefill_flops / prefill_s / bf16_peak);
  }
  if (amx_path && amx_peak > 0) {
    std::printf(", %.0f%% of the AMX peak", 100.0 * prefill_flops / prefill_s / amx_peak);
  }
  std::printf("\n");
  std::printf("decode: fastest of %lld interleaved rounds of %lld steps per batch\n", static_cast<long long>(rounds),
              static_cast<long long>(decode_tokens));
  std::printf("%-6s %-12s %-10s %-10s %-12s %s\n", "batch", "tokens/s", "step ms", "floor ms", "of roofline",
              "vs batch 1");
  for (const auto& d : decode) {
    std::printf("%-6lld %-12.2f %-10.2f %-10.2f %-12s %.2fx\n", static_cast<long long>(d["batch"].get<int64_t>()),
                d["tokens_per_s"].get<double>(), d["step_ms"].get<double>(), d["floor_ms"].get<double>(),
                absl::StrCat(static_cast<int>(100 * d["of_roofline"].get<double>() + 0.5), "%").c_str(),
                d["vs_batch1"].get<double>());
  }
  return absl::OkStatus();
}

}  // namespace strata::tools
