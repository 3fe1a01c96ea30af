// The stage executor on a generated tiny checkpoint: chunking, batching and
// splitting the layers into stages must not change a single bit of the
// result, and bad steps are refused before anything runs.
#include "worker/stage_executor.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/reference/reference_backend.h"
#include "model/make_model.h"
#include "worker/local_engine.h"

namespace strata::worker {
namespace {

using kernels::SequenceChunk;
using kernels::StepLayout;

class StageExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model::MakeModelOptions o;
    o.config = *model::LlamaPreset("tiny");
    o.dtype = model::DType::kF32;
    o.seed = 3;
    ASSERT_TRUE(model::WriteRandomModel(&fs_, "m", o).ok());
    auto ckpt = model::Checkpoint::Open(&fs_, "m");
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ckpt_ = std::move(*ckpt);
  }

  std::unique_ptr<StageExecutor> Load(StageSpec spec) {
    auto ex = StageExecutor::Load(&backend_, *ckpt_, spec);
    EXPECT_TRUE(ex.ok()) << ex.status();
    return ex.ok() ? std::move(*ex) : nullptr;
  }

  std::vector<int32_t> Prompt(int n, int salt) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back((i * 37 + salt * 11 + 5) % 512);
    return p;
  }

  model::InMemoryFileSystem fs_;
  std::unique_ptr<model::Checkpoint> ckpt_;
  kernels::ReferenceBackend backend_{2};
};

TEST_F(StageExecutorTest, ChunkedPrefillIsBitwiseEqualToOneChunk) {
  auto ex = Load(StageSpec::Whole(ckpt_->config()));
  const std::vector<int32_t> prompt = Prompt(23, 0);
  auto cache = backend_.AllocateKvCache(ex->KvShape(8, 4));
  ASSERT_TRUE(cache.ok());
  std::vector<float> whole, chunked;
  StepLayout one;
  one.sequences = {SequenceChunk{23, 0, 0, {0, 1, 2, 3, 4, 5}}};
  ASSERT_TRUE(ex->Forward(one, prompt, {}, {22}, cache->get(), &whole).ok());
  auto cache2 = backend_.AllocateKvCache(ex->KvShape(8, 4));
  // Chunks of 5, 7, 11 tokens, with a different block table.
  int start = 0;
  for (int n : {5, 7, 11}) {
    StepLayout l;
    l.sequences = {SequenceChunk{n, start, 0, {7, 6, 5, 4, 3, 2}}};
    std::vector<int32_t> ids(prompt.begin() + start, prompt.begin() + start + n);
    ASSERT_TRUE(ex->Forward(l, ids, {}, {n - 1}, cache2->get(), &chunked).ok());
    start += n;
  }
  ASSERT_EQ(whole.size(), 512u);
  EXPECT_EQ(whole, chunked);
}

TEST_F(StageExecutorTest, BatchMatesDoNotChangeASequence) {
  auto ex = Load(StageSpec::Whole(ckpt_->config()));
  const std::vector<int32_t> a = Prompt(9, 1), b = Prompt(4, 2);
  auto cache = backend_.AllocateKvCache(ex->KvShape(8, 4));
  std::vector<float> alone, both;
  StepLayout la;
  la.sequences = {SequenceChunk{9, 0, 0, {0, 1, 2}}};
  ASSERT_TRUE(ex->Forward(la, a, {}, {8}, cache->get(), &alone).ok());
  StepLayout lab;
  lab.sequences = {SequenceChunk{4, 0, 0, {3}}, SequenceChunk{9, 0, 0, {4, 5, 6}}};
  std::vector<int32_t> ids = b;
  ids.insert(ids.end(), a.begin(), a.end());
  ASSERT_TRUE(ex->Forward(lab, ids, {}, {3, 12}, cache->get(), &both).ok());
  ASSERT_EQ(both.size(), 2 * 512u);
  EXPECT_TRUE(std::equal(alone.begin(), alone.end(), both.begin() + 512));
}

TEST_F(StageExecutorTest, TwoStagesEqualOneWholeStage) {
  const auto& c = ckpt_->config();
  auto whole = Load(StageSpec::Whole(c));
  auto first = Load(StageSpec{0, 1, true, false});
  auto second = Load(StageSpec{1, c.num_layers, false, true});
  const std::vector<int32_t> prompt = Prompt(6, 3);
  StepLayout l;
  l.sequences = {SequenceChunk{6, 0, 0, {0, 1}}};
  auto c_whole = backend_.AllocateKvCache(whole->KvShape(2, 4));
  auto c_first = backend_.AllocateKvCache(first->KvShape(2, 4));
  auto c_second = backend_.AllocateKvCache(second->KvShape(2, 4));
  std::vector<float> want, hidden, got;
  ASSERT_TRUE(whole->Forward(l, prompt, {}, {5}, c_whole->get(), &want).ok());
  ASSERT_TRUE(first->Forward(l, prompt, {}, {}, c_first->get(), &hidden).ok());
  ASSERT_EQ(hidden.size(), 6u * c.hidden_size);
  ASSERT_TRUE(second->Forward(l, {}, hidden, {5}, c_second->get(), &got).ok());
  EXPECT_EQ(want, got);
  EXPECT_LT(first->weight_bytes(), whole->weight_bytes());
}

// Boundaries inside layers (after a layer's attention, model/stage_place.h):
// every way of cutting the tiny model's 8 half layers into three stages,
// one cut or both inside a layer,
// gives the whole stage's logits bit for bit, over a prompt and a decode
// step that reads the cache the prompt wrote; a stage holds the KV cache of
// the layers whose attention it runs, and the weights of its halves only.
TEST_F(StageExecutorTest, StagesCutInsideLayersEqualOneWholeStage) {
  const auto& c = ckpt_->config();
  ASSERT_EQ(c.num_layers, 4);
  auto whole = Load(StageSpec::Whole(c));
  const std::vector<int32_t> prompt = Prompt(6, 5);
  StepLayout prefill, decode;
  prefill.sequences = {SequenceChunk{6, 0, 0, {0, 1}}};
  decode.sequences = {SequenceChunk{1, 6, 0, {0, 1}}};
  auto c_whole = backend_.AllocateKvCache(whole->KvShape(2, 4));
  std::vector<float> want_prefill, want_decode;
  ASSERT_TRUE(whole->Forward(prefill, prompt, {}, {5}, c_whole->get(), &want_prefill).ok());
  ASSERT_TRUE(whole->Forward(decode, {prompt[2]}, {}, {0}, c_whole->get(), &want_decode).ok());
  int cuts = 0;
  for (int64_t a = 1; a < 8; ++a) {
    for (int64_t b = a + 1; b < 8; ++b) {
      if (a % 2 == 0 && b % 2 == 0) continue;  // whole layers: TwoStagesEqualOneWholeStage's case
      SCOPED_TRACE(absl::StrCat("halves [0, ", a, ") [", a, ", ", b, ") [", b, ", 8)"));
      const int64_t bounds[4] = {0, a, b, 8};
      std::vector<std::unique_ptr<StageExecutor>> stages;
      std::vector<std::unique_ptr<kernels::KvCache>> caches;
      uint64_t bytes = 0;
      for (int s = 0; s < 3; ++s) {
        StageSpec spec{bounds[s] / 2, (bounds[s + 1] + 1) / 2, s == 0, s == 2, 0, 1, bounds[s] % 2 == 1,
                       bounds[s + 1] % 2 == 1};
        stages.push_back(Load(spec));
        ASSERT_NE(stages.back(), nullptr);
        bytes += stages.back()->weight_bytes();
        const int64_t attention_layers = (bounds[s + 1] + 1) / 2 - (bounds[s] + 1) / 2;
        EXPECT_EQ(stages.back()->KvShape(2, 4).num_layers, std::max<int64_t>(attention_layers, 1));
        auto cache = backend_.AllocateKvCache(stages.back()->KvShape(2, 4));
        ASSERT_TRUE(cache.ok());
        caches.push_back(std::move(*cache));
      }
      // Each weight once; the embedding and the lm_head are one tensor or two.
      EXPECT_EQ(bytes, whole->weight_bytes());
      for (const auto* step : {&prefill, &decode}) {
        const bool first = step == &prefill;
        std::vector<float> hidden, next, got;
        ASSERT_TRUE(stages[0]->Forward(*step, first ? prompt : std::vector<int32_t>{prompt[2]}, {}, {},
                                       caches[0].get(), &hidden).ok());
        ASSERT_TRUE(stages[1]->Forward(*step, {}, hidden, {}, caches[1].get(), &next).ok());
        ASSERT_TRUE(stages[2]->Forward(*step, {}, next, {first ? 5 : 0}, caches[2].get(), &got).ok());
        EXPECT_EQ(got, first ? want_prefill : want_decode);
      }
      ++cuts;
    }
  }
  EXPECT_EQ(cuts, 18);
}

// Movable boundaries: every 3-stage cut of the tiny model's 8 half layers
// whose stages keep a half either way, each boundary movable across the MLP
// beside it, gives the whole stage's logits bit for bit whatever each step
// chooses (a prompt shifted, a decode not, a decode shifted: the KV cache
// the prompt wrote is read either way, since attention never moves). The
// stages hold each weight once plus the MLP of each boundary twice; a cut
// that would leave a stage empty with its boundaries moved is refused.
TEST_F(StageExecutorTest, MovableBoundariesGiveTheSameLogitsEitherWay) {
  const auto& c = ckpt_->config();
  auto whole = Load(StageSpec::Whole(c));
  const std::vector<int32_t> prompt = Prompt(6, 5);
  StepLayout prefill, decode1, decode2;
  prefill.sequences = {SequenceChunk{6, 0, 0, {0, 1}}};
  decode1.sequences = {SequenceChunk{1, 6, 0, {0, 1}}};
  decode2.sequences = {SequenceChunk{1, 7, 0, {0, 1}}};
  auto c_whole = backend_.AllocateKvCache(whole->KvShape(2, 4));
  std::vector<float> want[3];
  ASSERT_TRUE(whole->Forward(prefill, prompt, {}, {5}, c_whole->get(), &want[0]).ok());
  ASSERT_TRUE(whole->Forward(decode1, {prompt[2]}, {}, {0}, c_whole->get(), &want[1]).ok());
  ASSERT_TRUE(whole->Forward(decode2, {prompt[4]}, {}, {0}, c_whole->get(), &want[2]).ok());
  const uint64_t mlp_bytes = static_cast<uint64_t>(3 * c.hidden_size * c.intermediate_size + c.hidden_size) *
                             sizeof(float);
  auto other = [](int64_t half) { return half % 2 == 1 ? half + 1 : half - 1; };
  int cuts = 0, refused = 0;
  for (int64_t a = 1; a < 8; ++a) {
    for (int64_t b = a + 1; b < 8; ++b) {
      SCOPED_TRACE(absl::StrCat("halves [0, ", a, ") [", a, ", ", b, ") [", b, ", 8)"));
      const int64_t bounds[4] = {0, a, b, 8};
      const int64_t moved[4] = {0, other(a), other(b), 8};
      bool fits = true;
      for (int s = 0; s < 3; ++s) fits = fits && moved[s] < moved[s + 1];
      std::vector<std::unique_ptr<StageExecutor>> stages;
      std::vector<std::unique_ptr<kernels::KvCache>> caches;
      uint64_t bytes = 0;
      bool loaded = true;
      for (int s = 0; s < 3; ++s) {
        StageSpec spec{bounds[s] / 2, (bounds[s + 1] + 1) / 2, s == 0, s == 2, 0, 1, bounds[s] % 2 == 1,
                       bounds[s + 1] % 2 == 1};
        spec.movable_begin = s > 0;
        spec.movable_end = s < 2;
        auto ex = StageExecutor::Load(&backend_, *ckpt_, spec);
        if (!ex.ok()) {
          EXPECT_EQ(ex.status().code(), absl::StatusCode::kInvalidArgument);
          EXPECT_NE(ex.status().message().find("movable boundaries moved"), std::string::npos) << ex.status();
          loaded = false;
          continue;
        }
        bytes += (*ex)->weight_bytes();
        auto cache = backend_.AllocateKvCache((*ex)->KvShape(2, 4));
        ASSERT_TRUE(cache.ok());
        caches.push_back(std::move(*cache));
        stages.push_back(std::move(*ex));
      }
      EXPECT_EQ(loaded, fits);
      if (!loaded) {
        ++refused;
        continue;
      }
      EXPECT_EQ(bytes, whole->weight_bytes() + 2 * mlp_bytes);
      const bool shift[3] = {true, false, true};
      const StepLayout* steps[3] = {&prefill, &decode1, &decode2};
      const std::vector<int32_t> ids[3] = {prompt, {prompt[2]}, {prompt[4]}};
      for (int i = 0; i < 3; ++i) {
        for (auto& st : stages) ASSERT_TRUE(st->SetBoundariesShifted(shift[i]).ok());
        std::vector<float> hidden, next, got;
        ASSERT_TRUE(stages[0]->Forward(*steps[i], ids[i], {}, {}, caches[0].get(), &hidden).ok());
        ASSERT_TRUE(stages[1]->Forward(*steps[i], {}, hidden, {}, caches[1].get(), &next).ok());
        ASSERT_TRUE(stages[2]->Forward(*steps[i], {}, next, {i == 0 ? 5 : 0}, caches[2].get(), &got).ok());
        EXPECT_EQ(got, want[i]) << "step " << i;
      }
      ++cuts;
    }
  }
  EXPECT_EQ(cuts + refused, 21);
  EXPECT_GT(cuts, 10);
  EXPECT_GT(refused, 0);
}

TEST_F(StageExecutorTest, MovableBoundariesAreRefusedWhereNothingCanMove) {
  const auto& c = ckpt_->config();
  StageSpec first{0, 2, true, false, 0, 1};
  first.movable_begin = true;
  auto ex = StageExecutor::Load(&backend_, *ckpt_, first);
  ASSERT_FALSE(ex.ok());
  EXPECT_NE(ex.status().message().find("first stage's begin"), std::string::npos) << ex.status();
  StageSpec last{2, 4, false, true, 0, 1};
  last.movable_end = true;
  ex = StageExecutor::Load(&backend_, *ckpt_, last);
  ASSERT_FALSE(ex.ok());
  EXPECT_NE(ex.status().message().find("last stage's end"), std::string::npos) << ex.status();
  // A stage without a movable boundary runs every step where it was placed.
  auto whole = Load(StageSpec::Whole(c));
  EXPECT_EQ(whole->SetBoundariesShifted(true).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(whole->SetBoundariesShifted(false).ok());
}

TEST_F(StageExecutorTest, RefusesAStageWithNoHalfLeft) {
  // [1, 2) without layer 1's attention and without its MLP holds nothing.
  auto ex = StageExecutor::Load(&backend_, *ckpt_, StageSpec{1, 2, false, false, 0, 1, true, true});
  ASSERT_FALSE(ex.ok());
  EXPECT_EQ(ex.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ex.status().message().find("[1, 2)"), std::string::npos) << ex.status();
}

TEST_F(StageExecutorTest, RefusesBadStepsWithoutRunning) {
  auto ex = Load(StageSpec::Whole(ckpt_->config()));
  auto cache = backend_.AllocateKvCache(ex->KvShape(2, 4));
  std::vector<float> out;
  StepLayout l;
  l.sequences = {SequenceChunk{2, 0, 0, {0}}};
  auto s = ex->Forward(l, {1, 512}, {}, {1}, cache->get(), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token id 512"), absl::string_view::npos) << s;
  s = ex->Forward(l, {1}, {}, {0}, cache->get(), &out);
  EXPECT_NE(s.message().find("token ids"), absl::string_view::npos) << s;
  s = ex->Forward(l, {1, 2}, {}, {2}, cache->get(), &out);
  EXPECT_NE(s.message().find("logit row 2"), absl::string_view::npos) << s;
  l.sequences = {SequenceChunk{2, 0, 0, {9}}};
  s = ex->Forward(l, {1, 2}, {}, {1}, cache->get(), &out);
  EXPECT_NE(s.message().find("block_table"), absl::string_view::npos) << s;
}

TEST_F(StageExecutorTest, RejectsCheckpointWhoseShapesDisagreeWithConfig) {
  model::MakeModelOptions o;
  o.config = *model::LlamaPreset("tiny");
  o.dtype = model::DType::kF32;
  ASSERT_TRUE(model::WriteRandomModel(&fs_, "bad", o).ok());
  model::LlamaConfig lie = o.config;
  lie.intermediate_size = 192;
  fs_.SetFile("bad/config.json", model::LlamaConfigToJson(lie));
  auto ckpt = model::Checkpoint::Open(&fs_, "bad");
  ASSERT_TRUE(ckpt.ok());
  auto ex = StageExecutor::Load(&backend_, **ckpt, StageSpec::Whole(lie));
  ASSERT_FALSE(ex.ok());
  EXPECT_NE(ex.status().message().find("mlp.gate_proj.weight has shape [256, 128]"),
            absl::string_view::npos)
      << ex.status();
}

TEST_F(StageExecutorTest, EngineGeneratesAndValidatesRequests) {
  EngineOptions opts;
  opts.block_size = 4;
  opts.prefill_chunk = 3;
  auto engine = LocalEngine::Create(&backend_, *ckpt_, opts);
  ASSERT_TRUE(engine.ok());
  GenerateRequest r;
  r.prompt = Prompt(10, 4);
  r.max_tokens = 8;
  r.ignore_eos = true;
  r.return_logits = true;
  auto out = (*engine)->Generate(r);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->tokens.size(), 8u);
  EXPECT_EQ(out->finish_reason, "length");
  ASSERT_EQ(out->logits.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(out->tokens[i], Argmax(out->logits[i].data(), 512));
  // The same request again (cache reused) gives the same tokens.
  auto again = (*engine)->Generate(r);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tokens, out->tokens);

  GenerateRequest bad = r;
  bad.prompt = {};
  EXPECT_NE((*engine)->Generate(bad).status().message().find("prompt"), absl::string_view::npos);
  bad = r;
  bad.prompt = {1, -3};
  EXPECT_NE((*engine)->Generate(bad).status().message().find("prompt[1]"), absl::string_view::npos);
  bad = r;
  bad.max_tokens = 0;
  EXPECT_NE((*engine)->Generate(bad).status().message().find("max_tokens"), absl::string_view::npos);
  bad = r;
  bad.position_offset = 131072;
  EXPECT_EQ((*engine)->Generate(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata::worker
