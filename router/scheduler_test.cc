// The scheduler against a fake pipeline whose "model" is a hash of each
// sequence's prefix (kept per sequence like a KV cache, so recompute after
// preemption must rebuild it): chunked prefill, continuous batching,
// preemption under a small pool giving the same tokens as a large pool,
// priorities, cancellation, stop conditions and Score.
#include "router/scheduler.h"

#include <cmath>
#include <map>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace strata::router {
namespace {

constexpr int32_t kVocab = 1000;

struct Collect : SequenceSink {
  std::vector<int32_t> tokens;
  bool done = false;
  Finish reason = Finish::kError;
  std::string error;
  std::vector<float> score;
  int32_t prompt_tokens = 0, completion_tokens = 0;
  void Token(const TokenOut& t) override {
    ASSERT_FALSE(done);
    tokens.push_back(t.id);
  }
  void Finished(Finish r, int32_t prompt, int32_t completion, const std::string& e,
                const std::vector<float>& s) override {
    ASSERT_FALSE(done);
    done = true;
    prompt_tokens = prompt;
    completion_tokens = completion;
    reason = r;
    error = e;
    score = s;
  }
};

// Runs steps with up to `depth` in flight until every sequence finished.
class FakePipeline {
 public:
  transport::StepResult Run(const transport::StepPlan& plan) {
    transport::StepResult r;
    r.step_id = plan.step_id;
    int64_t row = 0;
    for (const auto& s : plan.sequences) {
      std::vector<int32_t>& kv = kv_[s.seq_id];
      EXPECT_LE(s.cached_tokens, static_cast<int32_t>(kv.size())) << "reads KV never written";
      kv.resize(s.cached_tokens);
      for (int32_t t = 0; t < s.num_tokens; ++t) kv.push_back(plan.token_ids[row + t]);
      // Blocks must be distinct across the sequences of a step.
      for (int32_t b : s.block_table) EXPECT_TRUE(used_.insert(b).second) << "block " << b << " shared";
      transport::SequenceResult sr;
      sr.seq_id = s.seq_id;
      if (s.sample) sr.token = Next(kv);
      if (s.prompt_logprobs) {
        for (int32_t t = 0; t < s.num_tokens; ++t) {
          const bool has_target = t + 1 < s.num_tokens || s.next_token_id >= 0;
          if (has_target) sr.prompt_logprobs.push_back(-static_cast<float>(s.cached_tokens + t + 1));
        }
      }
      r.sequences.push_back(sr);
      row += s.num_tokens;
    }
    used_.clear();
    return r;
  }
  static int32_t Next(const std::vector<int32_t>& prefix) {
    uint64_t h = 1469598103934665603ull;
    for (int32_t t : prefix) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
    return static_cast<int32_t>(h % kVocab);
  }

 private:
  std::map<uint64_t, std::vector<int32_t>> kv_;
  std::set<int32_t> used_;
};

void Drain(Scheduler& sched, FakePipeline& pipe, int depth, uint64_t* step_id) {
  std::vector<transport::StepPlan> in_flight;
  for (int guard = 0; guard < 100000 && !sched.empty(); ++guard) {
    while (static_cast<int>(in_flight.size()) < depth) {
      auto plan = sched.NextStep(++*step_id);
      if (!plan) break;
      in_flight.push_back(*plan);
    }
    ASSERT_FALSE(in_flight.empty()) << "sequences left but no step to run";
    const transport::StepResult r = pipe.Run(in_flight.front());
    in_flight.erase(in_flight.begin());
    sched.OnResult(r);
  }
  ASSERT_TRUE(sched.empty());
}

std::vector<int32_t> Expected(std::vector<int32_t> prompt, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(FakePipeline::Next(prompt));
    prompt.push_back(out.back());
  }
  return out;
}

TEST(SchedulerTest, ChunkedPrefillThenDecode) {
  SchedulerOptions o;
  o.max_tokens_per_step = 4;
  Scheduler sched(16, 4, o);
  Collect c;
  SequenceSpec spec;
  spec.prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  spec.max_tokens = 5;
  sched.Add(spec, &c);
  auto p1 = sched.NextStep(1);
  ASSERT_TRUE(p1);
  EXPECT_EQ(p1->sequences[0].num_tokens, 4);
  EXPECT_FALSE(p1->sequences[0].sample);
  EXPECT_FALSE(sched.NextStep(2)) << "a sequence is in one step at a time";
  FakePipeline pipe;
  sched.OnResult(pipe.Run(*p1));
  uint64_t step = 2;
  Drain(sched, pipe, 2, &step);
  EXPECT_EQ(c.tokens, Expected(spec.prompt, 5));
  EXPECT_EQ(c.reason, Finish::kLength);
  EXPECT_EQ(sched.blocks().free_blocks(), 16);
}

TEST(SchedulerTest, ChunkingContextOfLlamaShapes) {
  // Llama 3.2 1B and Llama 3.1 405B (hidden, FFN, heads, KV heads, head dim).
  EXPECT_EQ(ChunkingContext(2048, 8192, 32, 8, 64), 14848);
  EXPECT_EQ(ChunkingContext(16384, 53248, 128, 8, 128), 97280);
  EXPECT_EQ(ChunkingContext(64, 128, 0, 0, 16), 0);
}

TEST(SchedulerTest, ChunkThatFitsIsTheLongestChunkWithinTheBudget) {
  struct Case {
    int64_t remaining, prefix, budget, context, want;
  };
  const std::vector<Case> cases = {
      {1000, 0, 256, 0, 256},          // off: tokens count one
      {100, 0, 256, 0, 100},           // the rest of the prompt
      {1000, 0, 256, 1 << 30, 256},    // a context too long to matter
      {100000, 0, 256, 1024, 230},     // 230 * (1 + 115 / 1024) = 255.8; 231 costs 257.1
      {100000, 1024, 256, 1024, 124},  // twice the cost per token at the start: 255.5
      {100000, 100000, 256, 1000, 2},  // a long prefix: a few tokens a step
      {100000, 10000000, 256, 1, 1},   // never below one token
      {5, 0, 0, 1024, 0},              // no budget, no chunk
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << c.remaining << " " << c.prefix << " " << c.budget << " " << c.context);
    const int64_t got = ChunkThatFits(c.remaining, c.prefix, c.budget, c.context);
    // The definition, by brute force: the largest chunk whose cost fits.
    int64_t best = c.budget > 0 ? 1 : 0;
    for (int64_t k = 1; k <= std::min<int64_t>(c.remaining, c.budget); ++k) {
      const double cost = c.context > 0 ? k * (1.0 + (c.prefix + k / 2.0) / c.context) : k;
      if (std::llround(cost) <= c.budget) best = k;
    }
    EXPECT_EQ(got, best);
    EXPECT_EQ(got, c.want);
  }
}

// A long prompt's chunks shrink as its prefix grows (each within the
// step's budget by cost), and the tokens are those of plain chunking.
TEST(SchedulerTest, DynamicChunksShrinkAsThePrefixGrowsAndKeepTheTokens) {
  std::map<int64_t, std::vector<int32_t>> tokens;
  for (int64_t context : {int64_t{0}, int64_t{512}}) {
    SchedulerOptions o;
    o.max_tokens_per_step = 256;
    o.attention_context = context;
    for (int mb : {1, 2}) {
      o.micro_batches = mb;
      Scheduler sched(4096, 16, o);
      Collect c;
      SequenceSpec spec;
      for (int t = 0; t < 3000; ++t) spec.prompt.push_back((t * 13 + 5) % kVocab);
      spec.max_tokens = 4;
      sched.Add(spec, &c);
      FakePipeline pipe;
      std::vector<int32_t> chunks;
      int32_t prefix = 0;
      for (uint64_t step = 1; !sched.empty() && step < 100000; ++step) {
        auto plan = sched.NextStep(step);
        ASSERT_TRUE(plan);
        ASSERT_EQ(plan->sequences.size(), 1u);
        const auto& ps = plan->sequences[0];
        if (ps.cached_tokens < 3000) {
          EXPECT_EQ(ps.cached_tokens, prefix);
          chunks.push_back(ps.num_tokens);
          const double cost =
              context > 0 ? ps.num_tokens * (1.0 + (prefix + ps.num_tokens / 2.0) / context) : ps.num_tokens;
          EXPECT_LE(std::llround(cost), 256) << "chunk at prefix " << prefix;
          prefix += ps.num_tokens;
        }
        sched.OnResult(pipe.Run(*plan));
      }
      ASSERT_TRUE(sched.empty());
      EXPECT_EQ(c.tokens, Expected(spec.prompt, 4));
      if (context == 0) {
        EXPECT_EQ(chunks.front(), 256);
        if (mb == 1) EXPECT_EQ(chunks[chunks.size() - 2], 256);  // every full chunk the budget
      } else {
        EXPECT_LT(chunks.front(), 256);
        for (size_t k = 1; k + 1 < chunks.size(); ++k) EXPECT_LE(chunks[k], chunks[k - 1]) << "chunk " << k;
        EXPECT_LT(chunks[chunks.size() - 2], chunks.front() / 3) << "the chunks shrink with the prefix";
      }
      tokens[context * 10 + mb] = c.tokens;
    }
  }
  EXPECT_EQ(tokens[1], tokens[5121]);
  EXPECT_EQ(tokens[2], tokens[5122]);
}

// Many sequences of mixed lengths, a pool too small to hold them all, 1 to
// 3 steps in flight: every sequence gets exactly the tokens it gets alone.
TEST(SchedulerTest, PreemptionUnderASmallPoolLosesAndRepeatsNothing) {
  std::mt19937 rng(7);
  std::vector<SequenceSpec> specs;
  for (int i = 0; i < 40; ++i) {
    SequenceSpec s;
    const int len = 1 + static_cast<int>(rng() % 30);
    for (int t = 0; t < len; ++t) s.prompt.push_back(static_cast<int32_t>(rng() % kVocab));
    s.max_tokens = 1 + static_cast<int>(rng() % 25);
    s.priority = static_cast<int>(rng() % 3);
    specs.push_back(s);
  }
  for (int depth : {1, 3}) {
    for (int64_t blocks : {1000, 20}) {  // 20 blocks of 4 tokens: 80 tokens for 40 sequences
      SchedulerOptions o;
      o.max_tokens_per_step = 16;
      o.max_seqs_per_step = 8;
      Scheduler sched(blocks, 4, o);
      std::vector<Collect> out(specs.size());
      for (size_t i = 0; i < specs.size(); ++i) sched.Add(specs[i], &out[i]);
      FakePipeline pipe;
      uint64_t step = 0;
      Drain(sched, pipe, depth, &step);
      for (size_t i = 0; i < specs.size(); ++i) {
        ASSERT_TRUE(out[i].done);
        EXPECT_EQ(out[i].tokens, Expected(specs[i].prompt, specs[i].max_tokens)) << "seq " << i << " blocks " << blocks;
      }
      EXPECT_EQ(sched.blocks().free_blocks(), blocks);
      if (blocks == 20) EXPECT_GT(sched.preemptions(), 0u);
    }
  }
}

TEST(SchedulerTest, StopTokensCancelAndPriority) {
  Scheduler sched(100, 4, {});
  FakePipeline pipe;
  SequenceSpec a;
  a.prompt = {1, 2, 3};
  a.max_tokens = 50;
  a.stop_ids = {Expected(a.prompt, 3)[2]};  // the third token stops it
  Collect ca;
  sched.Add(a, &ca);
  SequenceSpec b = a;
  b.stop_ids.clear();
  Collect cb;
  const uint64_t idb = sched.Add(b, &cb);
  auto p = sched.NextStep(1);
  ASSERT_TRUE(p);
  sched.Cancel(idb);  // in flight: cancelled when the step returns
  EXPECT_FALSE(cb.done);
  sched.OnResult(pipe.Run(*p));
  EXPECT_TRUE(cb.done);
  EXPECT_EQ(cb.reason, Finish::kCancelled);
  uint64_t step = 1;
  Drain(sched, pipe, 1, &step);
  EXPECT_EQ(ca.tokens.size(), 3u);
  EXPECT_EQ(ca.reason, Finish::kStop);
  EXPECT_EQ(sched.blocks().free_blocks(), 100);

  // With room for one sequence's first chunk, the higher priority goes first.
  Scheduler small(2, 4, {});
  SequenceSpec lo, hi;
  lo.prompt = hi.prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  lo.max_tokens = hi.max_tokens = 1;
  hi.priority = 5;
  Collect cl, ch;
  small.Add(lo, &cl);
  const uint64_t idh = small.Add(hi, &ch);
  auto first = small.NextStep(1);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->sequences.size(), 1u);
  EXPECT_EQ(first->sequences[0].seq_id, idh);
}

TEST(SchedulerTest, ScoreReturnsContinuationLogprobsAcrossChunks) {
  SchedulerOptions o;
  o.max_tokens_per_step = 3;
  Scheduler sched(100, 4, o);
  SequenceSpec s;
  s.score = true;
  s.prompt = {1, 2, 3, 4};
  s.continuation = {5, 6, 7};
  Collect c;
  sched.Add(s, &c);
  FakePipeline pipe;
  uint64_t step = 0;
  Drain(sched, pipe, 1, &step);
  ASSERT_EQ(c.reason, Finish::kStop);
  // The fake's logprob of the token at position p is -p: positions 4, 5, 6.
  EXPECT_EQ(c.score, (std::vector<float>{-4, -5, -6}));
  EXPECT_TRUE(c.tokens.empty());
}

TEST(SchedulerTest, FailAllEndsEverything) {
  Scheduler sched(100, 4, {});
  Collect a, b;
  SequenceSpec s;
  s.prompt = {1, 2};
  sched.Add(s, &a);
  auto p = sched.NextStep(1);
  sched.Add(s, &b);
  sched.FailAll(Finish::kUnavailable, "stage 1 down");
  EXPECT_TRUE(a.done && b.done);
  EXPECT_EQ(a.reason, Finish::kUnavailable);
  EXPECT_EQ(a.error, "stage 1 down");
  EXPECT_EQ(sched.blocks().free_blocks(), 100);
  FakePipeline pipe;
  sched.OnResult(pipe.Run(*p));  // a late result is ignored
  EXPECT_TRUE(sched.empty());
}

}  // namespace

TEST(SchedulerTest, TakeAllHandsOverWhatEachSequenceHas) {
  Scheduler sched(100, 4, {});
  Collect a, b, c;
  SequenceSpec s;
  s.prompt = {1, 2};
  s.max_tokens = 5;
  s.sampling.seed = 9;
  sched.Add(s, &a);
  FakePipeline pipe;
  for (int i = 0; i < 2; ++i) sched.OnResult(pipe.Run(*sched.NextStep(i + 1)));
  ASSERT_EQ(a.tokens.size(), 2u);
  sched.Add(s, &b);
  const uint64_t cancelled = sched.Add(s, &c);
  sched.Cancel(cancelled);
  auto in_flight = sched.NextStep(10);  // a's third token and b's prompt, in flight
  ASSERT_TRUE(in_flight.has_value());
  auto taken = sched.TakeAll();
  EXPECT_TRUE(sched.empty());
  EXPECT_EQ(sched.blocks().free_blocks(), 100);
  ASSERT_EQ(taken.size(), 2u);
  EXPECT_TRUE(c.done);
  EXPECT_EQ(c.reason, Finish::kCancelled);
  for (auto& [spec, sink] : taken) {
    if (sink != &a) continue;
    // a's prompt now holds its two generated tokens, marked as output.
    EXPECT_EQ(spec.prompt.size(), 4u);
    EXPECT_EQ(spec.generated, 2);
    EXPECT_EQ(spec.max_tokens, 5);
  }
  sched.OnResult(pipe.Run(*in_flight));  // a late result is ignored
  EXPECT_FALSE(a.done);
  // On another scheduler, a finishes with 5 tokens in all and usage as if
  // it never moved.
  Scheduler other(100, 4, {});
  for (auto& [spec, sink] : taken) other.Add(spec, sink);
  for (uint64_t step = 20; !other.empty() && step < 60; ++step) {
    auto p = other.NextStep(step);
    if (p) other.OnResult(pipe.Run(*p));
  }
  EXPECT_TRUE(a.done && b.done);
  EXPECT_EQ(a.reason, Finish::kLength);
  EXPECT_EQ(a.tokens.size(), 5u);
  EXPECT_EQ(a.prompt_tokens, 2);
  EXPECT_EQ(a.completion_tokens, 5);
  // The same tokens as a run that never moved.
  Scheduler alone(100, 4, {});
  Collect ref;
  alone.Add(s, &ref);
  uint64_t step = 100;
  Drain(alone, pipe, 1, &step);
  EXPECT_EQ(a.tokens, ref.tokens);
}

}  // namespace strata::router

namespace strata::router {
namespace {

// Micro-batches (issue 21): with S stages each step takes its share of the
// active sequences, so the S steps in flight balance; every sequence gets
// the tokens it gets with one micro-batch, in order.
TEST(SchedulerTest, MicroBatchesBalanceAndGiveTheTokensOfOne) {
  struct Case {
    const char* what;
    int sequences;
    int prompt;  // tokens
    int stages;
  };
  const std::vector<Case> cases = {
      {"16 decoding over 2 stages", 16, 4, 2},
      {"17 over 2 (odd)", 17, 3, 2},
      {"9 over 3", 9, 5, 3},
      {"5 over 4", 5, 2, 4},
      {"3 over 4 (fewer than stages)", 3, 2, 4},
      {"64 long prompts over 2 (chunks shared too)", 64, 40, 2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::map<int, std::vector<std::vector<int32_t>>> tokens;  // by micro-batch count
    for (int mb : {1, c.stages}) {
      SchedulerOptions o;
      o.micro_batches = mb;
      o.max_tokens_per_step = 256;
      Scheduler sched(4096, 4, o);
      std::vector<Collect> sinks(c.sequences);
      for (int i = 0; i < c.sequences; ++i) {
        SequenceSpec spec;
        for (int t = 0; t < c.prompt; ++t) spec.prompt.push_back((i * 7 + t * 3) % kVocab);
        spec.max_tokens = 6;
        sched.Add(spec, &sinks[i]);
      }
      FakePipeline pipe;
      std::vector<transport::StepPlan> in_flight;
      std::vector<int> formed_with;  // active sequences when each step in flight was made
      uint64_t step = 0;
      for (int guard = 0; guard < 100000 && !sched.empty(); ++guard) {
        while (static_cast<int>(in_flight.size()) < c.stages) {
          int active = 0;
          for (const Collect& k : sinks) active += k.done ? 0 : 1;
          auto plan = sched.NextStep(++step);
          if (!plan) break;
          formed_with.push_back(active);
          if (mb > 1) {
            // Decode rows in a step: at most the share of the sequences active.
            int decodes = 0;
            for (const auto& s : plan->sequences) decodes += s.num_tokens == 1 && s.cached_tokens > 0 ? 1 : 0;
            EXPECT_LE(decodes, (active + mb - 1) / mb) << "step " << plan->step_id;
            // Sequences of a step in arrival order (running decodes first).
            for (size_t k = 1; k < plan->sequences.size(); ++k) {
              const auto& a = plan->sequences[k - 1];
              const auto& b = plan->sequences[k];
              const bool ad = a.num_tokens == 1 && a.cached_tokens > 0, bd = b.num_tokens == 1 && b.cached_tokens > 0;
              if (ad == bd) EXPECT_LT(a.seq_id, b.seq_id);
            }
          }
          in_flight.push_back(*plan);
        }
        ASSERT_FALSE(in_flight.empty());
        if (mb > 1 && static_cast<int>(in_flight.size()) == c.stages &&
            std::count(formed_with.begin(), formed_with.end(), formed_with[0]) == c.stages &&
            formed_with[0] >= c.stages) {
          // A full pipeline of steps made from the same active set: sizes
          // differ by at most one sequence while everyone decodes.
          bool all_decode = true;
          size_t lo = SIZE_MAX, hi = 0;
          for (const auto& p : in_flight) {
            for (const auto& s : p.sequences) all_decode = all_decode && s.num_tokens == 1 && s.cached_tokens > 0;
            lo = std::min(lo, p.sequences.size());
            hi = std::max(hi, p.sequences.size());
          }
          if (all_decode) EXPECT_LE(hi - lo, 1u) << "steps of " << lo << " and " << hi << " sequences";
        }
        sched.OnResult(pipe.Run(in_flight.front()));
        in_flight.erase(in_flight.begin());
        formed_with.erase(formed_with.begin());
      }
      ASSERT_TRUE(sched.empty());
      for (const Collect& k : sinks) {
        EXPECT_EQ(k.reason, Finish::kLength);
        tokens[mb].push_back(k.tokens);
      }
    }
    EXPECT_EQ(tokens[1], tokens[c.stages]) << "micro-batches changed the tokens";
    for (int i = 0; i < c.sequences; ++i) {
      std::vector<int32_t> prompt;
      for (int t = 0; t < c.prompt; ++t) prompt.push_back((i * 7 + t * 3) % kVocab);
      EXPECT_EQ(tokens[c.stages][i], Expected(prompt, 6)) << "sequence " << i;
    }
  }
}

// With micro-batches, the prompt tokens waiting are shared over no more
// steps than there are sequences: a lone prompt goes whole into one step
// (cut in S chunks it would pass the stages S times, one after another,
// while the other steps stayed empty), while many prompts still share the
// steps in flight.
TEST(SchedulerTest, PromptsAreCutOnlyWhenOtherSequencesFillTheOtherSteps) {
  struct Case {
    const char* what;
    int sequences;
    int prompt;
    int stages;
    std::vector<int> first_steps_rows;  // rows of the steps made while the pipeline fills
  };
  const std::vector<Case> cases = {
      {"a lone 64-token prompt, 2 stages", 1, 64, 2, {64}},
      {"a lone 200-token prompt, 4 stages", 1, 200, 4, {200}},
      {"two prompts, 2 stages: one each", 2, 64, 2, {64, 64}},
      {"two prompts, 4 stages: one each", 2, 64, 4, {64, 64}},
      // Many prompts share the steps as before: each step takes its share
      // of the prompt tokens still waiting.
      {"eight prompts, 2 stages: half of the 256 tokens, then half of the rest", 8, 32, 2, {128, 64}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    SchedulerOptions o;
    o.micro_batches = c.stages;
    o.max_tokens_per_step = 256;
    Scheduler sched(4096, 16, o);
    std::vector<Collect> sinks(c.sequences);
    for (int i = 0; i < c.sequences; ++i) {
      SequenceSpec spec;
      for (int t = 0; t < c.prompt; ++t) spec.prompt.push_back((i * 5 + t) % kVocab);
      spec.max_tokens = 2;
      sched.Add(spec, &sinks[i]);
    }
    std::vector<int> rows;
    for (int k = 0; k < c.stages; ++k) {
      auto p = sched.NextStep(static_cast<uint64_t>(k + 1));
      if (!p) break;
      rows.push_back(static_cast<int>(p->NumRows()));
    }
    EXPECT_EQ(rows, c.first_steps_rows);
    sched.FailAll(Finish::kCancelled, "test over");
  }
}

// A prompt that arrives while many sequences decode starts within the next
// S steps (its share of the step's tokens is never below a block).
TEST(SchedulerTest, APromptArrivingAmongDecodesStartsAtOnceWithMicroBatches) {
  SchedulerOptions o;
  o.micro_batches = 2;
  Scheduler sched(4096, 16, o);
  std::vector<Collect> decoding(30);
  for (int i = 0; i < 30; ++i) {
    SequenceSpec spec;
    spec.prompt = {static_cast<int32_t>(i + 1), 2, 3};
    spec.max_tokens = 1000;
    sched.Add(spec, &decoding[i]);
  }
  FakePipeline pipe;
  uint64_t step = 0;
  std::vector<transport::StepPlan> in_flight;
  auto run_one = [&] {
    sched.OnResult(pipe.Run(in_flight.front()));
    in_flight.erase(in_flight.begin());
  };
  for (int i = 0; i < 20; ++i) {  // every sequence past its prompt, decoding
    while (in_flight.size() < 2) {
      auto p = sched.NextStep(++step);
      if (!p) break;
      in_flight.push_back(*p);
    }
    run_one();
  }
  Collect late;
  SequenceSpec spec;
  spec.prompt = {9, 8, 7, 6, 5, 4, 3, 2, 1, 9};  // 10 tokens, under a block
  spec.max_tokens = 2;
  const uint64_t id = sched.Add(spec, &late);
  bool started = false;
  for (int i = 0; i < 2 && !started; ++i) {
    while (in_flight.size() < 2) {
      auto p = sched.NextStep(++step);
      if (!p) break;
      for (const auto& s : p->sequences) started = started || s.seq_id == id;
      in_flight.push_back(*p);
    }
    run_one();
  }
  EXPECT_TRUE(started) << "the prompt waited behind the decodes";
  sched.FailAll(Finish::kCancelled, "test over");
}

// A prompt whose cached prefix was taken but which did not fit this step's
// tokens waits holding nothing, and takes the prefix again in a later step
// (it kept the blocks before, and taking them again aborted the router).
// Results here are token 7 for every sampling row: the test is about blocks.
TEST(SchedulerTest, APromptDeferredAfterTakingItsCachedPrefixTakesItAgainLater) {
  SchedulerOptions o;
  o.micro_batches = 2;
  Scheduler sched(4096, 4, o);
  uint64_t step = 0;
  std::vector<transport::StepPlan> in_flight;
  int32_t y2_cached = -1;
  uint64_t y2_id = 0;
  auto run = [&] {
    for (int guard = 0; guard < 1000 && !sched.empty(); ++guard) {
      while (in_flight.size() < 2) {
        auto p = sched.NextStep(++step);
        if (!p) break;
        for (const auto& q : p->sequences) {
          if (q.seq_id == y2_id && y2_cached < 0) y2_cached = q.cached_tokens;
        }
        in_flight.push_back(*p);
      }
      ASSERT_FALSE(in_flight.empty());
      transport::StepResult r;
      r.step_id = in_flight.front().step_id;
      for (const auto& q : in_flight.front().sequences) {
        transport::SequenceResult sr;
        sr.seq_id = q.seq_id;
        sr.token = q.sample ? 7 : -1;
        r.sequences.push_back(sr);
      }
      in_flight.erase(in_flight.begin());
      sched.OnResult(r);
    }
  };
  Collect first;
  SequenceSpec x;
  x.prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  x.max_tokens = 1;
  sched.Add(x, &first);
  run();  // publishes the two blocks of [1..8]
  Collect a, b;
  SequenceSpec y1;
  for (int t = 0; t < 14; ++t) y1.prompt.push_back(100 + t);
  y1.max_tokens = 3;
  SequenceSpec y2;
  y2.prompt = {1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23, 24, 25};  // 8 cached, 6 to compute
  y2.max_tokens = 3;
  sched.Add(y1, &a);
  y2_id = sched.Add(y2, &b);
  // The first step's budget (1 decode + 14 prompt tokens) goes to y1's 14,
  // leaving 1 token: y2 takes its cached prefix, does not fit, and waits.
  run();
  EXPECT_EQ(a.reason, Finish::kLength);
  EXPECT_EQ(b.reason, Finish::kLength);
  EXPECT_EQ(b.tokens.size(), 3u);
  EXPECT_EQ(y2_cached, 8) << "y2 started after its cached prefix";
  EXPECT_EQ(sched.blocks().free_blocks(), 4096) << "every block back in the pool";
}

}  // namespace
}  // namespace strata::router
