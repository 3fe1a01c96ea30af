// The fast CPU backend through the stage executor and the single-process
// engine, on generated checkpoints:
//  - greedy tokens equal the reference engine's on the tiny and a 1b-shaped
//    checkpoint, for every ISA this CPU has. With bf16 activations (AVX-512
//    BF16) logits differ from the float32 oracle by rounding, so where the
//    reference's top two logits nearly tie the test accepts either token,
//    says so, and stops comparing (the sequences diverge from there);
//  - batch invariance: a sequence's logits are bitwise the same alone, in a
//    mixed batch of prefilling and decoding sequences, with its prompt cut
//    into chunks, and on 1 or 2 threads.
// AMX (--isa amx) has tests of its own, which skip saying why where tiles
// cannot run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/reference_backend.h"
#include "model/make_model.h"
#include "worker/local_engine.h"
#include "worker/stage_executor.h"

namespace strata {
namespace {

using kernels::SequenceChunk;
using kernels::StepLayout;
using kernels::cpu::CpuBackend;
using kernels::cpu::Isa;

std::vector<Isa> Present() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (kernels::cpu::IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

class CpuEngineTest : public ::testing::Test {
 protected:
  std::unique_ptr<model::Checkpoint> Make(const model::LlamaConfig& c, uint64_t seed) {
    model::MakeModelOptions o;
    o.config = c;
    o.dtype = model::DType::kBF16;
    o.seed = seed;
    const std::string dir = "m" + std::to_string(seed);
    EXPECT_TRUE(model::WriteRandomModel(&fs_, dir, o).ok());
    auto ckpt = model::Checkpoint::Open(&fs_, dir);
    EXPECT_TRUE(ckpt.ok()) << ckpt.status();
    return ckpt.ok() ? std::move(*ckpt) : nullptr;
  }

  // Greedy generation on `backend` against the reference engine.
  void CompareGreedy(const model::Checkpoint& ckpt, kernels::Backend* backend, int prompt_len, int steps,
                     const std::string& what) {
    kernels::ReferenceBackend ref(2);
    worker::EngineOptions opts;
    opts.prefill_chunk = 16;
    auto fast = worker::LocalEngine::Create(backend, ckpt, opts);
    auto slow = worker::LocalEngine::Create(&ref, ckpt, opts);
    ASSERT_TRUE(fast.ok() && slow.ok());
    worker::GenerateRequest req;
    for (int i = 0; i < prompt_len; ++i) req.prompt.push_back((i * 37 + 11) % ckpt.config().vocab_size);
    req.max_tokens = steps;
    req.ignore_eos = true;
    req.return_logits = true;
    auto got = (*fast)->Generate(req);
    auto want = (*slow)->Generate(req);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(want.ok()) << want.status();
    for (size_t i = 0; i < want->tokens.size(); ++i) {
      const std::vector<float>& rl = want->logits[i];
      float scale = 0;
      for (float v : rl) scale = std::max(scale, std::fabs(v));
      if (got->tokens[i] != want->tokens[i]) {
        const float gap = rl[want->tokens[i]] - rl[got->tokens[i]];
        const bool bf16_acts = backend->Name() == "cpu-avx512bf16" || backend->Name() == "cpu-amx";
        ASSERT_LE(gap, 1e-4f * std::max(1.0f, scale) + (bf16_acts ? 0.02f * scale : 0.0f))
            << what << ": step " << i << " chose " << got->tokens[i] << ", reference " << want->tokens[i];
        std::printf("%s: step %zu: near-tie (reference gap %g) between %d and %d accepted; stopping\n",
                    what.c_str(), i, gap, got->tokens[i], want->tokens[i]);
        return;
      }
    }
    std::printf("%s: %zu greedy tokens equal the reference\n", what.c_str(), want->tokens.size());
  }


  void GreedyOnTiny(Isa isa) {
    auto ckpt = Make(*model::LlamaPreset("tiny"), 1);
    ASSERT_NE(ckpt, nullptr);
    for (model::DType kv : {model::DType::kBF16, model::DType::kF32}) {
      CpuBackend cpu({2, isa, kv});
      CompareGreedy(*ckpt, &cpu, 21, 24, cpu.Name() + (kv == model::DType::kF32 ? " kv f32" : " kv bf16"));
    }
  }

  // The 1b preset's layer shapes (hidden 2048, 32/8 heads, head_dim 64,
  // FFN 8192) with 2 layers and a 4096-token vocabulary, to keep CI quick.
  std::unique_ptr<model::Checkpoint> Make1bShaped() {
    model::LlamaConfig c = *model::LlamaPreset("1b");
    c.num_layers = 2;
    c.vocab_size = 4096;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
    return Make(c, 2);
  }

  void BatchInvariance(Isa isa);

  model::InMemoryFileSystem fs_;
};

// Skips the test, saying why, where tiles cannot run.
#define SKIP_WITHOUT_AMX()                                                                                   \
  if (!kernels::cpu::IsaSupported(Isa::kAmx)) {                                                             \
    GTEST_SKIP() << "no AMX here: "                                                                         \
                 << (kernels::cpu::IsaSupported(Isa::kAvx512Bf16) ? std::string(kernels::cpu::AmxStatus().message()) \
                                                                  : std::string("this CPU lacks AVX-512 BF16")); \
  }

TEST_F(CpuEngineTest, GreedyTokensMatchReferenceOnTiny) {
  for (Isa isa : Present()) GreedyOnTiny(isa);
}

TEST_F(CpuEngineTest, AmxGreedyTokensMatchReferenceOnTiny) {
  SKIP_WITHOUT_AMX();
  GreedyOnTiny(Isa::kAmx);
}

TEST_F(CpuEngineTest, GreedyTokensMatchReferenceOn1bShapes) {
  auto ckpt = Make1bShaped();
  ASSERT_NE(ckpt, nullptr);
  // The best vector ISA (AMX has its own test below).
  const Isa best = Present().back();
  CpuBackend cpu({2, best, model::DType::kBF16});
  CompareGreedy(*ckpt, &cpu, 40, 8, "1b-shaped " + cpu.Name());
  if (best == Isa::kAvx512Bf16) {
    CpuBackend f32_acts({2, Isa::kAvx512, model::DType::kF32});
    CompareGreedy(*ckpt, &f32_acts, 40, 8, "1b-shaped " + f32_acts.Name() + " kv f32");
  }
}

TEST_F(CpuEngineTest, AmxGreedyTokensMatchReferenceOn1bShapes) {
  SKIP_WITHOUT_AMX();
  auto ckpt = Make1bShaped();
  ASSERT_NE(ckpt, nullptr);
  CpuBackend cpu({2, Isa::kAmx, model::DType::kBF16});
  CompareGreedy(*ckpt, &cpu, 40, 8, "1b-shaped " + cpu.Name());
}

// Logits of sequence A's prompt (22 tokens) and 6 decode steps.
std::vector<std::vector<float>> RunA(worker::StageExecutor& ex, kernels::Backend& b, int mode) {
  const int prompt_len = 22;
  std::vector<int32_t> a;
  for (int i = 0; i < prompt_len; ++i) a.push_back((i * 29 + 3) % 512);
  auto cache = b.AllocateKvCache(ex.KvShape(64, 4));
  EXPECT_TRUE(cache.ok());
  std::vector<std::vector<float>> logits;
  std::vector<float> out;
  const std::vector<int32_t> table_a = {9, 3, 17, 5, 30, 31, 40, 41, 2};  // 36 tokens of blocks of 4
  // Batch mates: B prefilling a 13-token prompt, C decoding at position 40.
  std::vector<int32_t> b_prompt, c_hist;
  for (int i = 0; i < 13; ++i) b_prompt.push_back((i * 7 + 1) % 512);
  const std::vector<int32_t> table_b = {50, 51, 52, 53, 54, 55, 56, 57};
  const std::vector<int32_t> table_c = {10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 23};
  if (mode == 1) {  // give C a history first
    for (int i = 0; i < 40; ++i) c_hist.push_back((i * 13 + 5) % 512);
    StepLayout l;
    l.sequences = {SequenceChunk{40, 0, 0, table_c}};
    EXPECT_TRUE(ex.Forward(l, c_hist, {}, {}, cache->get(), &out).ok());
  }
  // Prompt: one chunk (mode 0, 1) or chunks of 5, 9, 8 (mode 2).
  std::vector<int> chunks = mode == 2 ? std::vector<int>{5, 9, 8} : std::vector<int>{prompt_len};
  int done = 0;
  for (int n : chunks) {
    StepLayout l;
    std::vector<int32_t> ids(a.begin() + done, a.begin() + done + n);
    l.sequences = {SequenceChunk{n, done, 0, table_a}};
    int64_t a_last = n - 1;
    if (mode == 1) {  // A with B (prefill) and C (decode) around it
      l.sequences = {SequenceChunk{13, 0, 0, table_b}, SequenceChunk{n, done, 0, table_a},
                     SequenceChunk{1, 40, 0, table_c}};
      std::vector<int32_t> all = b_prompt;
      all.insert(all.end(), ids.begin(), ids.end());
      all.push_back(7);
      ids = all;
      a_last = 13 + n - 1;
    }
    EXPECT_TRUE(ex.Forward(l, ids, {}, {a_last}, cache->get(), &out).ok());
    done += n;
  }
  logits.push_back(out);
  int32_t next = worker::Argmax(out.data(), 512);
  for (int step = 0; step < 6; ++step) {
    StepLayout l;
    std::vector<int32_t> ids = {next};
    int64_t row = 0;
    l.sequences = {SequenceChunk{1, prompt_len + step, 0, table_a}};
    if (mode == 1) {
      l.sequences = {SequenceChunk{1, 41 + step, 0, table_c}, SequenceChunk{1, prompt_len + step, 0, table_a}};
      ids = {static_cast<int32_t>(100 + step), next};
      row = 1;
    }
    EXPECT_TRUE(ex.Forward(l, ids, {}, {row}, cache->get(), &out).ok());
    logits.push_back(out);
    next = worker::Argmax(out.data(), 512);
  }
  return logits;
}

void CpuEngineTest::BatchInvariance(Isa isa) {
  auto ckpt = Make(*model::LlamaPreset("tiny"), 3);
  ASSERT_NE(ckpt, nullptr);
  {
    std::vector<std::vector<float>> alone;
    for (int threads : {1, 2}) {
      CpuBackend b({threads, isa, model::DType::kBF16});
      auto ex = worker::StageExecutor::Load(&b, *ckpt, worker::StageSpec::Whole(ckpt->config()));
      ASSERT_TRUE(ex.ok()) << ex.status();
      for (int mode : {0, 1, 2}) {
        auto got = RunA(**ex, b, mode);
        if (alone.empty()) {
          alone = got;
          continue;
        }
        ASSERT_EQ(got.size(), alone.size());
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(got[i], alone[i]) << b.Name() << " threads " << threads << " mode " << mode
                                      << " (0 alone, 1 batched, 2 chunked) step " << i;
        }
      }
    }
  }
}

TEST_F(CpuEngineTest, LogitsAreBitwiseIndependentOfBatchChunksAndThreads) {
  for (Isa isa : Present()) BatchInvariance(isa);
}

TEST_F(CpuEngineTest, AmxLogitsAreBitwiseIndependentOfBatchChunksAndThreads) {
  SKIP_WITHOUT_AMX();
  BatchInvariance(Isa::kAmx);
}

}  // namespace
}  // namespace strata
