// Tensor parallelism inside one stage: T ranks (threads here, each with its
// own backend and KV cache, joined by Gloo over TCP) give the logits of the
// unsplit stage within 1e-4 relative and the same greedy tokens, through a
// chunked prefill and decode steps; layer ranges split into stages compose.
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/reference_backend.h"
#include "model/make_model.h"
#include "worker/gloo_communicator.h"
#include "worker/local_engine.h"
#include "worker/stage_executor.h"
#include "worker/tcp_store.h"

namespace strata::worker {
namespace {

using kernels::SequenceChunk;
using kernels::StepLayout;
using std::chrono::milliseconds;

constexpr int kBlock = 4;

// Runs a prompt (in two chunks) then `decode` greedy steps through a chain
// of stages; returns the logits of every step's last row.
std::vector<std::vector<float>> RunChain(const std::vector<StageExecutor*>& stages,
                                         const std::vector<kernels::KvCache*>& caches,
                                         std::vector<int32_t> prompt, int decode) {
  std::vector<std::vector<float>> all;
  std::vector<int32_t> blocks;
  for (int i = 0; i < 32; ++i) blocks.push_back(31 - i);  // a shuffled block table
  int64_t cached = 0;
  std::vector<std::vector<int32_t>> steps;
  const size_t half = prompt.size() / 2;
  steps.push_back({prompt.begin(), prompt.begin() + half});
  steps.push_back({prompt.begin() + half, prompt.end()});
  for (int s = 0; s < static_cast<int>(steps.size()); ++s) {
    const std::vector<int32_t>& ids = steps[s];
    StepLayout layout;
    layout.sequences = {SequenceChunk{static_cast<int32_t>(ids.size()), static_cast<int32_t>(cached), 0, blocks}};
    std::vector<float> hidden, out;
    for (size_t st = 0; st < stages.size(); ++st) {
      const bool last = st + 1 == stages.size();
      auto status = stages[st]->Forward(layout, st == 0 ? ids : std::vector<int32_t>{}, hidden,
                                        last ? std::vector<int64_t>{static_cast<int64_t>(ids.size()) - 1}
                                             : std::vector<int64_t>{},
                                        caches[st], &out);
      EXPECT_TRUE(status.ok()) << status;
      if (!status.ok()) return all;
      hidden = out;
    }
    cached += static_cast<int64_t>(ids.size());
    if (s >= 1) {
      all.push_back(out);
      if (static_cast<int>(all.size()) <= decode) {
        steps.push_back({Argmax(out.data(), static_cast<int64_t>(out.size()))});
      }
    }
  }
  return all;
}

void ExpectClose(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t s = 0; s < got.size(); ++s) {
    ASSERT_EQ(got[s].size(), want[s].size());
    float scale = 0;
    for (float v : want[s]) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < got[s].size(); ++i) {
      ASSERT_NEAR(got[s][i], want[s][i], 1e-4f * scale + 1e-6f) << what << " step " << s << " i " << i;
    }
    EXPECT_EQ(Argmax(got[s].data(), static_cast<int64_t>(got[s].size())),
              Argmax(want[s].data(), static_cast<int64_t>(want[s].size())))
        << what << " step " << s;
  }
}

// A first step of one sequence: n prompt rows in blocks 0-7 of an 8-block
// cache, the logits of every row asked for.
std::pair<std::vector<int64_t>, StepLayout> WholePrefill(int64_t n) {
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < n; ++i) rows.push_back(i);
  std::vector<int32_t> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(i);
  StepLayout layout;
  layout.sequences = {SequenceChunk{static_cast<int32_t>(n), 0, 0, blocks}};
  return {rows, layout};
}

class TpExecutorTest : public ::testing::Test {
 protected:
  void Make(model::LlamaConfig config) {
    model::MakeModelOptions o;
    o.config = config;
    // f32 weights: the parity bound is 1e-4 relative, and the bf16 dot path
    // rounds activations to bf16 (the split changes which values round).
    o.dtype = model::DType::kF32;
    o.seed = 11;
    o.shards = 3;
    ASSERT_TRUE(model::WriteRandomModel(&fs_, "m", o).ok());
    auto ckpt = model::Checkpoint::Open(&fs_, "m");
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ckpt_ = std::move(*ckpt);
  }

  std::vector<std::vector<float>> Whole(const std::vector<int32_t>& prompt, int decode) {
    kernels::cpu::CpuBackend backend({1, kernels::cpu::BestIsa(), model::DType::kF32});
    auto ex = StageExecutor::Load(&backend, *ckpt_, StageSpec::Whole(ckpt_->config()));
    EXPECT_TRUE(ex.ok()) << ex.status();
    auto cache = backend.AllocateKvCache((*ex)->KvShape(32, kBlock));
    return RunChain({ex->get()}, {cache->get()}, prompt, decode);
  }

  // `stages` stages x `tp` ranks, each rank a thread running its column of
  // stages; returns rank 0's logits. With `inside`, each cut between stages
  // is half a layer later, after that layer's attention.
  std::vector<std::vector<float>> Split(int num_stages, int tp, const std::vector<int32_t>& prompt, int decode,
                                        bool inside = false) {
    const model::LlamaConfig& c = ckpt_->config();
    std::vector<std::unique_ptr<TcpStoreServer>> servers;
    for (int s = 0; s < num_stages; ++s) servers.push_back(std::move(*TcpStoreServer::Start("127.0.0.1", 0)));
    std::vector<std::vector<std::vector<float>>> results(tp);
    std::vector<std::thread> threads;
    for (int r = 0; r < tp; ++r) {
      threads.emplace_back([&, r] {
        std::vector<std::unique_ptr<kernels::cpu::CpuBackend>> backends;
        std::vector<std::unique_ptr<TcpStoreClient>> stores;
        std::vector<std::unique_ptr<GlooCommunicator>> comms;
        std::vector<std::unique_ptr<StageExecutor>> exs;
        std::vector<std::unique_ptr<kernels::KvCache>> caches;
        for (int s = 0; s < num_stages; ++s) {
          StageSpec spec;
          spec.first_layer = c.num_layers * s / num_stages;
          spec.last_layer = c.num_layers * (s + 1) / num_stages;
          spec.starts_at_mlp = inside && s > 0;
          spec.ends_after_attention = inside && s + 1 < num_stages;
          spec.last_layer += spec.ends_after_attention ? 1 : 0;
          spec.has_embedding = s == 0;
          spec.has_lm_head = s + 1 == num_stages;
          spec.tp_rank = r;
          spec.tp_size = tp;
          backends.push_back(std::make_unique<kernels::cpu::CpuBackend>(kernels::cpu::CpuBackendOptions{1, kernels::cpu::BestIsa(), model::DType::kF32}));
          stores.push_back(std::move(*TcpStoreClient::Connect("127.0.0.1", servers[s]->port(), milliseconds(10000))));
          auto comm = GlooCommunicator::Create(stores.back().get(), "s", "127.0.0.1", r, tp, milliseconds(20000));
          ASSERT_TRUE(comm.ok()) << comm.status();
          comms.push_back(std::move(*comm));
          auto ex = StageExecutor::Load(backends.back().get(), *ckpt_, spec, comms.back().get());
          ASSERT_TRUE(ex.ok()) << ex.status();
          caches.push_back(std::move(*backends.back()->AllocateKvCache((*ex)->KvShape(32, kBlock))));
          EXPECT_EQ(caches.back()->shape().num_kv_heads, c.num_kv_heads / tp);
          exs.push_back(std::move(*ex));
        }
        std::vector<StageExecutor*> ptrs;
        std::vector<kernels::KvCache*> cptrs;
        for (int s = 0; s < num_stages; ++s) {
          ptrs.push_back(exs[s].get());
          cptrs.push_back(caches[s].get());
        }
        results[r] = RunChain(ptrs, cptrs, prompt, decode);
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 1; r < tp; ++r) EXPECT_EQ(results[r], results[0]) << "rank " << r << " differs from rank 0";
    return results[0];
  }

  // Rewrites the lm_head (the tensor the last stage loads: lm_head.weight,
  // or the tied embedding) in the checkpoint's files, found there by its
  // bytes, with edit(rows [vocab][hidden] f32), and opens it again.
  void EditLmHead(const std::function<void(float* w, int64_t vocab, int64_t hidden)>& edit) {
    const model::LlamaConfig c = ckpt_->config();
    const std::string name = ckpt_->Has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight";
    auto t = ckpt_->Find(name);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->dtype, model::DType::kF32);
    const std::string old(reinterpret_cast<const char*>(t->data), t->num_bytes);
    std::vector<float> w(c.vocab_size * c.hidden_size);
    ASSERT_EQ(w.size() * sizeof(float), old.size());
    std::memcpy(w.data(), old.data(), old.size());
    edit(w.data(), c.vocab_size, c.hidden_size);
    ckpt_.reset();
    int found = 0;
    for (int s = 1; s <= 3; ++s) {
      const std::string path = absl::StrFormat("m/model-%05d-of-%05d.safetensors", s, 3);
      if (!fs_.Exists(path)) continue;
      std::string file = fs_.Contents(path);
      const size_t at = file.find(old);
      if (at == std::string::npos) continue;
      file.replace(at, old.size(), reinterpret_cast<const char*>(w.data()), old.size());
      fs_.SetFile(path, std::move(file));
      ++found;
    }
    ASSERT_EQ(found, 1);
    auto ckpt = model::Checkpoint::Open(&fs_, "m");
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ckpt_ = std::move(*ckpt);
  }

  // What one rank's thread gets from RunRanks.
  struct Rank {
    int r = 0;
    kernels::Backend* backend = nullptr;
    GlooCommunicator* comm = nullptr;
    StageExecutor* ex = nullptr;
    kernels::KvCache* cache = nullptr;  // 8 blocks
  };
  // `tp` threads, each one rank of a whole-model stage on its own CPU
  // backend (f32), joined by Gloo (over shared memory when `shm`), each
  // running body(rank); returns once all have.
  void RunRanks(int tp, bool shm, const std::function<void(const Rank&)>& body) {
    const model::LlamaConfig& c = ckpt_->config();
    auto server = TcpStoreServer::Start("127.0.0.1", 0);
    ASSERT_TRUE(server.ok()) << server.status();
    std::vector<std::thread> threads;
    for (int r = 0; r < tp; ++r) {
      threads.emplace_back([&, r] {
        kernels::cpu::CpuBackend backend({1, kernels::cpu::BestIsa(), model::DType::kF32});
        auto store = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(10000));
        ASSERT_TRUE(store.ok()) << store.status();
        auto comm = GlooCommunicator::Create(store->get(), "s", "127.0.0.1", r, tp, milliseconds(20000), shm);
        ASSERT_TRUE(comm.ok()) << comm.status();
        StageSpec spec = StageSpec::Whole(c);
        spec.tp_rank = r;
        spec.tp_size = tp;
        auto ex = StageExecutor::Load(&backend, *ckpt_, spec, comm->get());
        ASSERT_TRUE(ex.ok()) << ex.status();
        auto cache = backend.AllocateKvCache((*ex)->KvShape(8, kBlock));
        ASSERT_TRUE(cache.ok());
        body(Rank{r, &backend, comm->get(), ex->get(), cache->get()});
      });
    }
    for (auto& t : threads) t.join();
  }

  // A prefill of every row of `prompt` through `tp` ranks (shared memory or
  // TCP between them) as StepRunner's greedy path runs it: ForwardGreedy's
  // tokens on rank 0 (and on every rank when `every_rank`) must equal what
  // Backend::Sample draws from the whole rows (ForwardLogits, all-gathered).
  void ExpectGreedyEqualsWholeRows(int tp, bool shm, const std::vector<int32_t>& prompt, bool every_rank,
                                   const std::string& what) {
    const model::LlamaConfig& c = ckpt_->config();
    const int64_t n = static_cast<int64_t>(prompt.size());
    const auto [rows, layout] = WholePrefill(n);
    // Both spellings of greedy: temperature 0, and top_k 1 at a temperature.
    std::vector<kernels::SampleRequest> requests(n);
    for (int64_t i = 0; i < n; ++i) {
      requests[i].sample = true;
      if (i % 2 == 1) {
        requests[i].params.temperature = 0.7f;
        requests[i].params.top_k = 1;
        requests[i].params.seed = 99;
      }
      ASSERT_TRUE(StageExecutor::IsPlainGreedy(requests[i]));
    }
    RunRanks(tp, shm, [&](const Rank& k) {
      auto logits = k.ex->ForwardLogits(layout, prompt, {}, rows, k.cache);
      ASSERT_TRUE(logits.ok()) << logits.status();
      std::vector<kernels::SampleResult> want(n), got(n);
      ASSERT_TRUE(k.backend->Sample(*logits, c.vocab_size, requests, absl::MakeSpan(want)).ok());
      // The same step again (it writes the same keys and values).
      auto status = k.ex->ForwardGreedy(layout, prompt, {}, rows, k.cache, requests, absl::MakeSpan(got));
      ASSERT_TRUE(status.ok()) << status;
      if (k.r != 0 && !every_rank) return;
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(got[i].token, want[i].token) << what << ", rank " << k.r << ", row " << i;
      }
    });
  }

  model::InMemoryFileSystem fs_;
  std::unique_ptr<model::Checkpoint> ckpt_;
};

// The greedy draw with the vocabulary split (StepRunner's path when a step
// asks only for tokens) gives every row the token of the whole row, over
// shared memory and TCP, at 2 and 4 ranks.
TEST_F(TpExecutorTest, GreedyOnTheSplitVocabularyDrawsTheWholeRowsTokens) {
  Make(*model::LlamaPreset("tiny"));
  const std::vector<int32_t> prompt = {1, 17, 300, 42, 9, 511, 77, 5, 123};
  for (bool shm : {true, false}) {
    ExpectGreedyEqualsWholeRows(2, shm, prompt, true, shm ? "2 ranks, shared memory" : "2 ranks, TCP");
  }
  model::LlamaConfig four = *model::LlamaPreset("tiny");
  four.num_kv_heads = 4;
  four.num_heads = 8;
  four.num_layers = 2;
  Make(four);
  ExpectGreedyEqualsWholeRows(4, true, prompt, true, "4 ranks, shared memory");
}

// Every logit of rank 1's half equals rank 0's at the same place: the
// whole row's first maximum is in rank 0's half, so equal winners go to
// the lower rank.
TEST_F(TpExecutorTest, GreedyOnTheSplitVocabularyGivesEqualWinnersToTheLowerRank) {
  Make(*model::LlamaPreset("tiny"));
  EditLmHead([](float* w, int64_t vocab, int64_t hidden) {
    std::memcpy(w + vocab / 2 * hidden, w, vocab / 2 * hidden * sizeof(float));
  });
  const std::vector<int32_t> prompt = {1, 17, 300, 42, 9, 511, 77, 5, 123};
  for (bool shm : {true, false}) ExpectGreedyEqualsWholeRows(2, shm, prompt, true, "halves equal");
}

// A NaN logit where a slice's scan starts (rank 1's first id, then the
// row's first id) makes that slice's winner NaN: the ranks agree to draw
// from the whole rows on rank 0, which gives what the whole row gives.
TEST_F(TpExecutorTest, GreedyOnTheSplitVocabularyFallsBackToWholeRowsOnNaN) {
  Make(*model::LlamaPreset("tiny"));
  for (int64_t first : {1, 0}) {  // 1: rank 1's first row; 0: the whole vocabulary's first
    EditLmHead([first](float* w, int64_t vocab, int64_t hidden) {
      const int64_t id = first * vocab / 2;
      for (int64_t j = 0; j < hidden; ++j) w[id * hidden + j] = std::nanf("");
    });
    const std::vector<int32_t> prompt = {1, 17, 300, 42, 9};
    for (bool shm : {true, false}) {
      ExpectGreedyEqualsWholeRows(2, shm, prompt, false, absl::StrCat("NaN at id ", first, " x vocab / 2"));
    }
  }
}

TEST_F(TpExecutorTest, GreedyRefusesRowsThatAskForMoreThanTheToken) {
  Make(*model::LlamaPreset("tiny"));
  const model::LlamaConfig& c = ckpt_->config();
  kernels::ReferenceBackend backend(1);
  auto ex = StageExecutor::Load(&backend, *ckpt_, StageSpec::Whole(c));
  ASSERT_TRUE(ex.ok()) << ex.status();
  auto cache = backend.AllocateKvCache((*ex)->KvShape(8, kBlock));
  ASSERT_TRUE(cache.ok());
  StepLayout layout;
  layout.sequences = {SequenceChunk{2, 0, 0, {0}}};
  struct Case {
    const char* what;
    std::function<void(kernels::SampleRequest*)> edit;
    bool greedy;
  };
  const std::vector<Case> cases = {
      {"temperature 0", [](kernels::SampleRequest*) {}, true},
      {"top_k 1", [](kernels::SampleRequest* q) { q->params.temperature = 2; q->params.top_k = 1; }, true},
      {"no draw", [](kernels::SampleRequest* q) { q->sample = false; }, false},
      {"sampled", [](kernels::SampleRequest* q) { q->params.temperature = 0.5f; }, false},
      {"logprobs", [](kernels::SampleRequest* q) { q->logprobs = 0; }, false},
      {"target", [](kernels::SampleRequest* q) { q->target = 3; }, false},
      {"negative temperature", [](kernels::SampleRequest* q) { q->params.temperature = -1; }, false},
      {"NaN temperature", [](kernels::SampleRequest* q) { q->params.temperature = std::nanf(""); q->params.top_k = 1; }, false},
      {"top_p 0", [](kernels::SampleRequest* q) { q->params.top_p = 0; }, false},
  };
  for (const Case& k : cases) {
    kernels::SampleRequest q;
    q.sample = true;
    k.edit(&q);
    EXPECT_EQ(StageExecutor::IsPlainGreedy(q), k.greedy) << k.what;
    std::vector<kernels::SampleRequest> requests = {q};
    std::vector<kernels::SampleResult> results(1);
    auto status = (*ex)->ForwardGreedy(layout, {1, 2}, {}, {1}, cache->get(), requests, absl::MakeSpan(results));
    EXPECT_EQ(status.ok(), k.greedy) << k.what << ": " << status;
    if (!k.greedy) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << k.what;
    }
  }
  std::vector<kernels::SampleResult> results(2);
  std::vector<kernels::SampleRequest> one(1);
  one[0].sample = true;
  EXPECT_EQ((*ex)->ForwardGreedy(layout, {1, 2}, {}, {1}, cache->get(), one, absl::MakeSpan(results)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TpExecutorTest, TinyTwoRanksAndTwoStagesMatchTheWholeModel) {
  Make(*model::LlamaPreset("tiny"));
  const std::vector<int32_t> prompt = {1, 17, 300, 42, 9, 511, 77, 5, 123, 64, 2, 88, 401};
  auto want = Whole(prompt, 6);
  ASSERT_EQ(want.size(), 7u);
  ExpectClose(Split(1, 2, prompt, 6), want, "1 stage x 2 ranks");
  ExpectClose(Split(2, 2, prompt, 6), want, "2 stages x 2 ranks");
  ExpectClose(Split(2, 1, prompt, 6), want, "2 stages x 1 rank");
  ExpectClose(Split(2, 2, prompt, 6, /*inside=*/true), want, "2 stages x 2 ranks, cut inside a layer");
}

TEST_F(TpExecutorTest, FourRanksWithOneKvHeadEach) {
  model::LlamaConfig c = *model::LlamaPreset("tiny");
  c.num_kv_heads = 4;
  c.num_heads = 8;
  c.num_layers = 2;
  Make(c);
  const std::vector<int32_t> prompt = {1, 200, 3, 4, 500, 6, 7};
  ExpectClose(Split(1, 4, prompt, 3), Whole(prompt, 3), "1 stage x 4 ranks");
}

// The worker's form (LogitsTo::kRankZero): rank 0 gets bitwise the logits
// every rank gets from the all-gather, for every row of a step, whether the
// group gathers to rank 0 through shared memory or all-gathers over TCP;
// the other ranks get none.
TEST_F(TpExecutorTest, LogitsToRankZeroEqualTheAllGathered) {
  Make(*model::LlamaPreset("tiny"));
  const model::LlamaConfig& c = ckpt_->config();
  const std::vector<int32_t> prompt = {1, 17, 300, 42, 9, 511, 77, 5, 123};
  const int64_t n = static_cast<int64_t>(prompt.size());
  const auto [rows, layout] = WholePrefill(n);
  for (bool shm : {true, false}) {
    RunRanks(2, shm, [&](const Rank& k) {
      EXPECT_EQ(k.comm->uses_shared_memory(), shm);
      EXPECT_EQ(k.comm->gathers_columns_to_root(), shm);
      auto every = k.ex->ForwardLogits(layout, prompt, {}, rows, k.cache);
      ASSERT_TRUE(every.ok()) << every.status();
      ASSERT_NE(*every, nullptr);
      const std::vector<float> all(*every, *every + n * c.vocab_size);
      // The same step again (it writes the same keys and values).
      auto zero = k.ex->ForwardLogits(layout, prompt, {}, rows, k.cache, StageExecutor::LogitsTo::kRankZero);
      ASSERT_TRUE(zero.ok()) << zero.status();
      if (k.r != 0) {
        EXPECT_EQ(*zero, nullptr) << "rank " << k.r << " got logits";
        return;
      }
      ASSERT_NE(*zero, nullptr);
      EXPECT_EQ(std::vector<float>(*zero, *zero + n * c.vocab_size), all) << (shm ? "shared memory" : "TCP");
    });
  }
}

TEST_F(TpExecutorTest, RefusesATpSizeThatDoesNotDivideTheKvHeads) {
  Make(*model::LlamaPreset("tiny"));  // 2 KV heads
  kernels::ReferenceBackend backend(1);
  StageSpec spec = StageSpec::Whole(ckpt_->config());
  spec.tp_size = 4;
  SingleRankCommunicator comm;
  auto ex = StageExecutor::Load(&backend, *ckpt_, spec, &comm);
  ASSERT_FALSE(ex.ok());
  EXPECT_NE(ex.status().message().find("KV heads"), std::string::npos) << ex.status();
  spec.tp_size = 2;
  ex = StageExecutor::Load(&backend, *ckpt_, spec, &comm);  // size 1 communicator for a 2-rank stage
  EXPECT_FALSE(ex.ok());
}

TEST_F(TpExecutorTest, ReportsTheBytesOfItsSlicesOnly) {
  Make(*model::LlamaPreset("tiny"));
  const model::LlamaConfig& c = ckpt_->config();
  kernels::ReferenceBackend backend(1);
  auto whole = StageExecutor::Load(&backend, *ckpt_, StageSpec::Whole(c));
  ASSERT_TRUE(whole.ok());
  // Two ranks each hold half of every matrix and all of every norm.
  const uint64_t norms = (2 * c.num_layers + 1) * c.hidden_size * 4;
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  uint64_t sum = 0;
  std::vector<std::thread> threads;
  std::vector<uint64_t> bytes(2);
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      kernels::ReferenceBackend b(1);
      auto store = TcpStoreClient::Connect("127.0.0.1", (*server)->port(), milliseconds(5000));
      auto comm = GlooCommunicator::Create(store->get(), "b", "127.0.0.1", r, 2, milliseconds(10000));
      ASSERT_TRUE(comm.ok()) << comm.status();
      StageSpec spec = StageSpec::Whole(c);
      spec.tp_rank = r;
      spec.tp_size = 2;
      auto ex = StageExecutor::Load(&b, *ckpt_, spec, comm->get());
      ASSERT_TRUE(ex.ok()) << ex.status();
      bytes[r] = (*ex)->weight_bytes();
    });
  }
  for (auto& t : threads) t.join();
  sum = bytes[0] + bytes[1];
  EXPECT_EQ(bytes[0], bytes[1]);
  EXPECT_EQ(sum, (*whole)->weight_bytes() + norms);
}

}  // namespace
}  // namespace strata::worker
