// Prefix caching: the block hash chain (SHA-256 of the documented bytes),
// the block manager's reference counts, eviction order and reuse (a table
// of operations with the expected state after each), and the scheduler with
// the cache against a fake pipeline whose KV lives in the blocks of the
// plan's block tables (as a worker's does), so a wrong table, a shared
// block written over or a prefix skipped that was never computed gives
// wrong tokens.
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "router/block_hash.h"
#include "router/block_manager.h"
#include "router/scheduler.h"

namespace strata::router {
namespace {

std::string Hex(const BlockHash& h) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : h.bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

TEST(BlockHashTest, IsSha256OfTheDocumentedBytes) {
  // python3: hashlib.sha256(b"strata prefix cache v1\nllama").hexdigest()
  EXPECT_EQ(Hex(RootHash("llama")), "dad8dd25d0e8140e4d75face5d0899afdf13e78b3633067b0d52a14f36919d3b");
  // hashlib.sha256(bytes(32) + struct.pack("<3i", 1, 2, -1)).hexdigest()
  const std::vector<int32_t> tokens = {1, 2, -1};
  EXPECT_EQ(Hex(ChainHash(BlockHash{}, tokens.data(), tokens.size())),
            "8d6a364a553e605f416dfe69198a8123b0ecf61546ccd54d4f2312f43b3e2641");
}

TEST(BlockHashTest, ABlocksHashCoversEverythingBeforeIt) {
  const BlockHash root = RootHash("m");
  auto hashes = [&](const std::vector<int32_t>& tokens, const BlockHash& r) {
    std::vector<BlockHash> h;
    ExtendBlockHashes(r, tokens, 4, 100, &h);
    return h;
  };
  const std::vector<int32_t> base = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<BlockHash> h = hashes(base, root);
  ASSERT_EQ(h.size(), 2u) << "full blocks only";
  struct Case {
    const char* what;
    std::vector<int32_t> tokens;
    BlockHash root;
    bool first_same, second_same;
  };
  const Case cases[] = {
      {"the same tokens", {1, 2, 3, 4, 5, 6, 7, 8}, root, true, true},
      {"a different partial tail", {1, 2, 3, 4, 5, 6, 7, 8, 10, 11}, root, true, true},
      {"the second block differs", {1, 2, 3, 4, 5, 6, 7, 9}, root, true, false},
      {"the first block differs: so does the second", {0, 2, 3, 4, 5, 6, 7, 8}, root, false, false},
      {"two tokens swapped", {2, 1, 3, 4, 5, 6, 7, 8}, root, false, false},
      {"another model", {1, 2, 3, 4, 5, 6, 7, 8}, RootHash("n"), false, false},
  };
  for (const Case& c : cases) {
    const std::vector<BlockHash> o = hashes(c.tokens, c.root);
    ASSERT_EQ(o.size(), 2u) << c.what;
    EXPECT_EQ(o[0] == h[0], c.first_same) << c.what;
    EXPECT_EQ(o[1] == h[1], c.second_same) << c.what;
  }
  // Extending step by step gives the same chain as all at once, and
  // max_blocks caps it.
  std::vector<BlockHash> step;
  ExtendBlockHashes(root, base, 4, 1, &step);
  EXPECT_EQ(step.size(), 1u);
  ExtendBlockHashes(root, base, 4, 100, &step);
  EXPECT_EQ(step, h);
}

// One operation on a BlockManager of 6 blocks of 4 tokens, and the state
// expected after it. Sequences are "tables" by index; hashes are named by
// small integers.
struct Op {
  enum Kind { kGrow, kPublish, kRelease, kAcquire } kind;
  int table;
  int64_t arg;                  // Grow: tokens; Publish: block index in the table; Acquire: max blocks
  std::vector<int> hashes;      // Publish: {hash}; Acquire: the chain
  bool ok;                      // Grow: succeeded; Acquire: ignored
  int64_t acquired;             // Acquire: blocks taken
  int64_t free, used, cached, evictable;
  uint64_t evictions;
  std::vector<int32_t> expect_table;  // the table after the op
};

BlockHash H(int i) {
  BlockHash h;
  h.bytes[0] = static_cast<uint8_t>(i);
  h.bytes[1] = 0xab;
  return h;
}

TEST(BlockManagerTest, ReferenceCountsEvictionOrderAndReuse) {
  // Fresh blocks come off a stack: 0, 1, 2, ...
  const Op ops[] = {
      // Table 0 takes 3 blocks and publishes them as the chain 1, 2, 3.
      {Op::kGrow, 0, 12, {}, true, 0, 3, 3, 0, 0, 0, {0, 1, 2}},
      {Op::kPublish, 0, 0, {1}, true, 0, 3, 3, 1, 0, 0, {0, 1, 2}},
      {Op::kPublish, 0, 1, {2}, true, 0, 3, 3, 2, 0, 0, {0, 1, 2}},
      {Op::kPublish, 0, 2, {3}, true, 0, 3, 3, 3, 0, 0, {0, 1, 2}},
      // Table 1 shares the first two (refs 2), then diverges.
      {Op::kAcquire, 1, 10, {1, 2, 9}, true, 2, 3, 3, 3, 0, 0, {0, 1}},
      {Op::kGrow, 1, 12, {}, true, 0, 2, 4, 3, 0, 0, {0, 1, 3}},
      // Publishing a hash that is already cached elsewhere changes nothing.
      {Op::kPublish, 1, 2, {3}, true, 0, 2, 4, 3, 0, 0, {0, 1, 3}},
      // Table 0 ends: its private block 2 is cached and unreferenced; the
      // shared ones are still held by table 1.
      {Op::kRelease, 0, 0, {}, true, 0, 3, 3, 3, 1, 0, {}},
      // Table 1 ends: everything is free, 3 blocks cached.
      {Op::kRelease, 1, 0, {}, true, 0, 6, 0, 3, 3, 0, {}},
      // A hit takes the cached chain back (they leave the LRU list).
      {Op::kAcquire, 2, 10, {1, 2, 3}, true, 3, 3, 3, 3, 0, 0, {0, 1, 2}},
      // max_blocks caps a hit.
      {Op::kAcquire, 3, 1, {1, 2, 3}, true, 1, 3, 3, 3, 0, 0, {0}},
      {Op::kRelease, 3, 0, {}, true, 0, 3, 3, 3, 0, 0, {}},
      {Op::kRelease, 2, 0, {}, true, 0, 6, 0, 3, 3, 0, {}},
      // Uncached blocks are used before any cached one is evicted.
      {Op::kGrow, 4, 12, {}, true, 0, 3, 3, 3, 3, 0, {3, 4, 5}},
      // Then the least recently released go first, and a table's tail
      // before its head: table 2 released 2, 1, 0 in that order.
      {Op::kGrow, 4, 16, {}, true, 0, 2, 4, 2, 2, 1, {3, 4, 5, 2}},
      {Op::kAcquire, 5, 10, {1, 2, 3}, true, 2, 0, 6, 2, 0, 1, {0, 1}},
      // Nothing left: a Grow fails and changes nothing.
      {Op::kGrow, 4, 20, {}, false, 0, 0, 6, 2, 0, 1, {3, 4, 5, 2}},
      {Op::kRelease, 5, 0, {}, true, 0, 2, 4, 2, 2, 1, {}},
      {Op::kGrow, 4, 24, {}, true, 0, 0, 6, 0, 0, 3, {3, 4, 5, 2, 1, 0}},
      // After the eviction the chain misses.
      {Op::kAcquire, 6, 10, {1, 2, 3}, true, 0, 0, 6, 0, 0, 3, {}},
      {Op::kRelease, 4, 0, {}, true, 0, 6, 0, 0, 0, 3, {}},
  };
  BlockManager bm(6, 4);
  std::map<int, std::vector<int32_t>> tables;
  int i = 0;
  for (const Op& op : ops) {
    SCOPED_TRACE(::testing::Message() << "op " << i++);
    std::vector<int32_t>& t = tables[op.table];
    switch (op.kind) {
      case Op::kGrow:
        EXPECT_EQ(bm.Grow(&t, op.arg), op.ok);
        break;
      case Op::kPublish:
        bm.Publish(t[op.arg], H(op.hashes[0]));
        break;
      case Op::kRelease:
        bm.Release(&t);
        break;
      case Op::kAcquire: {
        std::vector<BlockHash> chain;
        for (int h : op.hashes) chain.push_back(H(h));
        EXPECT_EQ(bm.Match(chain, op.arg), op.acquired);
        EXPECT_EQ(bm.AcquireCached(chain, op.arg, &t), op.acquired);
        break;
      }
    }
    EXPECT_EQ(bm.free_blocks(), op.free);
    EXPECT_EQ(bm.used_blocks(), op.used);
    EXPECT_EQ(bm.cached_blocks(), op.cached);
    EXPECT_EQ(bm.evictable_blocks(), op.evictable);
    EXPECT_EQ(bm.evictions(), op.evictions);
    EXPECT_EQ(t, op.expect_table);
  }
}

TEST(BlockManagerTest, SharedBlocksAreCountedPerHolder) {
  BlockManager bm(4, 2);
  std::vector<int32_t> a, b, c;
  ASSERT_TRUE(bm.Grow(&a, 4));
  bm.Publish(a[0], H(1));
  bm.Publish(a[1], H(2));
  EXPECT_EQ(bm.AcquireCached({H(1), H(2)}, 2, &b), 2);
  EXPECT_EQ(bm.AcquireCached({H(1)}, 2, &c), 1);
  EXPECT_EQ(bm.refs(a[0]), 3);
  EXPECT_EQ(bm.refs(a[1]), 2);
  bm.Release(&a);
  bm.Release(&b);
  EXPECT_EQ(bm.refs(c[0]), 1);
  EXPECT_EQ(bm.used_blocks(), 1) << "a shared block is freed only when no sequence holds it";
  bm.Release(&c);
  EXPECT_EQ(bm.used_blocks(), 0);
  EXPECT_EQ(bm.cached_blocks(), 2);
}

constexpr int32_t kVocab = 1000;
constexpr int64_t kBlockSize = 4;

struct Collect : SequenceSink {
  std::vector<int32_t> tokens;
  bool done = false;
  Finish reason = Finish::kError;
  std::vector<float> score;
  void Token(const TokenOut& t) override { tokens.push_back(t.id); }
  void Finished(Finish r, int32_t, int32_t, const std::string&, const std::vector<float>& s) override {
    done = true;
    reason = r;
    score = s;
  }
};

int32_t NextToken(const std::vector<int32_t>& context) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : context) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
  return static_cast<int32_t>(h % kVocab);
}

// A pipeline whose KV cache is a pool of blocks like a worker's: each step
// writes a sequence's new tokens into the slots of its block table and
// reads the cached ones from there, so what it samples depends on what the
// blocks hold.
class BlockPipeline {
 public:
  explicit BlockPipeline(int64_t num_blocks) : kv_(num_blocks, std::vector<int32_t>(kBlockSize, -1)) {}

  transport::StepResult Run(const transport::StepPlan& plan) {
    transport::StepResult r;
    r.step_id = plan.step_id;
    int64_t row = 0;
    std::map<int32_t, uint64_t> writer;  // block -> the sequence writing it this step
    for (const auto& s : plan.sequences) {
      std::vector<int32_t> context;
      for (int32_t p = 0; p < s.cached_tokens; ++p) {
        const int32_t t = kv_[s.block_table[p / kBlockSize]][p % kBlockSize];
        EXPECT_GE(t, 0) << "sequence " << s.seq_id << " reads KV never written at " << p;
        context.push_back(t);
      }
      transport::SequenceResult sr;
      sr.seq_id = s.seq_id;
      for (int32_t i = 0; i < s.num_tokens; ++i) {
        const int32_t p = s.cached_tokens + i;
        const int32_t block = s.block_table[p / kBlockSize];
        EXPECT_EQ(writer.emplace(block, s.seq_id).first->second, s.seq_id)
            << "block " << block << " written by two sequences of a step";
        kv_[block][p % kBlockSize] = plan.token_ids[row + i];
        context.push_back(plan.token_ids[row + i]);
        if (s.prompt_logprobs) {
          const int32_t target = i + 1 < s.num_tokens ? plan.token_ids[row + i + 1] : s.next_token_id;
          if (target >= 0) sr.prompt_logprobs.push_back(-static_cast<float>((NextToken(context) + target) % 97));
        }
      }
      if (s.sample) sr.token = NextToken(context);
      r.sequences.push_back(sr);
      row += s.num_tokens;
    }
    return r;
  }

 private:
  std::vector<std::vector<int32_t>> kv_;
};

void Drain(Scheduler& sched, BlockPipeline& pipe, int depth, uint64_t* step_id) {
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
    out.push_back(NextToken(prompt));
    prompt.push_back(out.back());
  }
  return out;
}

std::vector<int32_t> Range(int32_t from, int32_t n) {
  std::vector<int32_t> v;
  for (int32_t i = 0; i < n; ++i) v.push_back(from + i);
  return v;
}

SchedulerOptions Options(bool caching) {
  SchedulerOptions o;
  o.max_tokens_per_step = 8;
  o.prefix_caching = caching;
  o.model = "m";
  return o;
}

// One request after another on the same replica: what the second takes
// from the cache, and its tokens (which must be those it gets alone).
TEST(PrefixCacheSchedulerTest, ReusesTheLongestCachedChainBeforeTheLastToken) {
  const std::vector<int32_t> system = Range(100, 10);  // 2 full blocks and 2 tokens
  auto with = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  struct Case {
    const char* what;
    std::vector<int32_t> first, second;
    int64_t hit_tokens;
  };
  const Case cases[] = {
      {"a shared system prompt", with(system, {1, 2, 3}), with(system, {7, 8, 9}), 8},
      {"the same prompt: its last block is recomputed", with(system, {1, 2}), with(system, {1, 2}), 8},
      {"the same prompt of whole blocks: the last block is recomputed", Range(100, 12), Range(100, 12), 8},
      {"a longer prompt reuses the blocks the first generated", Range(100, 6),
       with(Range(100, 6), Expected(Range(100, 6), 3)), 8},
      {"a prompt shorter than a block", {1, 2, 3}, {1, 2, 3}, 0},
      {"different from the first token", with({5}, system), with({6}, system), 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Scheduler sched(64, kBlockSize, Options(true));
    BlockPipeline pipe(64);
    uint64_t step = 0;
    SequenceSpec a, b;
    a.prompt = c.first;
    b.prompt = c.second;
    a.max_tokens = b.max_tokens = 4;
    Collect ca, cb;
    sched.Add(a, &ca);
    Drain(sched, pipe, 2, &step);
    EXPECT_EQ(sched.CachedPrefixTokens(b), c.hit_tokens);
    const uint64_t queried = sched.prefix_queried_tokens(), hits = sched.prefix_hit_tokens();
    sched.Add(b, &cb);
    Drain(sched, pipe, 2, &step);
    EXPECT_EQ(cb.tokens, Expected(b.prompt, 4));
    EXPECT_EQ(sched.prefix_queried_tokens() - queried, b.prompt.size());
    EXPECT_EQ(sched.prefix_hit_tokens() - hits, static_cast<uint64_t>(c.hit_tokens));
    EXPECT_EQ(sched.blocks().used_blocks(), 0);
    EXPECT_GT(sched.blocks().cached_blocks(), 0);
  }
}

TEST(PrefixCacheSchedulerTest, TheFirstStepOfAHitStartsAfterTheCachedPrefix) {
  Scheduler sched(64, kBlockSize, Options(true));
  BlockPipeline pipe(64);
  uint64_t step = 0;
  SequenceSpec a;
  a.prompt = Range(1, 11);
  a.max_tokens = 1;
  Collect ca, cb;
  sched.Add(a, &ca);
  Drain(sched, pipe, 1, &step);
  sched.Add(a, &cb);
  auto plan = sched.NextStep(++step);
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->sequences.size(), 1u);
  EXPECT_EQ(plan->sequences[0].cached_tokens, 8);
  EXPECT_EQ(plan->sequences[0].num_tokens, 3);
  EXPECT_EQ(plan->token_ids, (std::vector<int32_t>{9, 10, 11}));
  ASSERT_EQ(plan->sequences[0].block_table.size(), 3u);
  sched.OnResult(pipe.Run(*plan));
  EXPECT_EQ(cb.tokens, ca.tokens);
}

TEST(PrefixCacheSchedulerTest, OffReusesNothing) {
  Scheduler sched(64, kBlockSize, Options(false));
  BlockPipeline pipe(64);
  uint64_t step = 0;
  SequenceSpec a;
  a.prompt = Range(1, 11);
  Collect ca, cb;
  sched.Add(a, &ca);
  Drain(sched, pipe, 1, &step);
  EXPECT_EQ(sched.CachedPrefixTokens(a), 0);
  sched.Add(a, &cb);
  Drain(sched, pipe, 1, &step);
  EXPECT_EQ(cb.tokens, ca.tokens);
  EXPECT_EQ(sched.blocks().cached_blocks(), 0);
  EXPECT_EQ(sched.prefix_queried_tokens(), 0u);
}

// Many sequences sharing a few system prompts, a pool too small for them
// all (preemption), 1 to 3 steps in flight, some cancelled on the way:
// every sequence that finishes gets exactly its tokens alone, and the pool
// ends with nothing held.
TEST(PrefixCacheSchedulerTest, PreemptionAndCancellationWithSharedBlocks) {
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> systems;
  for (int i = 0; i < 3; ++i) systems.push_back(Range(200 * (i + 1), 9 + 4 * i));
  std::vector<SequenceSpec> specs;
  for (int i = 0; i < 40; ++i) {
    SequenceSpec s;
    s.prompt = systems[rng() % systems.size()];
    const int q = 1 + static_cast<int>(rng() % 6);
    for (int t = 0; t < q; ++t) s.prompt.push_back(static_cast<int32_t>(rng() % kVocab));
    s.max_tokens = 1 + static_cast<int>(rng() % 12);
    s.priority = static_cast<int>(rng() % 2);
    specs.push_back(s);
  }
  for (int depth : {1, 3}) {
    for (int64_t blocks : {400, 24}) {
      SCOPED_TRACE(::testing::Message() << "depth " << depth << " blocks " << blocks);
      SchedulerOptions o = Options(true);
      o.max_tokens_per_step = 16;
      o.max_seqs_per_step = 6;
      Scheduler sched(blocks, kBlockSize, o);
      BlockPipeline pipe(blocks);
      std::vector<Collect> out(specs.size());
      std::vector<uint64_t> ids;
      uint64_t step = 0;
      // The first half arrives, runs a while (some cancelled mid-way), then
      // the second half arrives onto a warm cache.
      for (size_t i = 0; i < specs.size() / 2; ++i) ids.push_back(sched.Add(specs[i], &out[i]));
      for (int turn = 0; turn < 6; ++turn) {
        auto plan = sched.NextStep(++step);
        if (plan) sched.OnResult(pipe.Run(*plan));
      }
      std::set<size_t> cancelled;
      for (size_t i = 0; i < ids.size(); i += 7) {
        if (!out[i].done) cancelled.insert(i);
        sched.Cancel(ids[i]);
      }
      EXPECT_FALSE(cancelled.empty());
      for (size_t i = specs.size() / 2; i < specs.size(); ++i) ids.push_back(sched.Add(specs[i], &out[i]));
      Drain(sched, pipe, depth, &step);
      for (size_t i = 0; i < specs.size(); ++i) {
        ASSERT_TRUE(out[i].done) << "seq " << i;
        if (cancelled.count(i)) {
          EXPECT_EQ(out[i].reason, Finish::kCancelled);
          continue;
        }
        EXPECT_EQ(out[i].tokens, Expected(specs[i].prompt, specs[i].max_tokens)) << "seq " << i;
      }
      EXPECT_EQ(sched.blocks().used_blocks(), 0);
      EXPECT_EQ(sched.blocks().free_blocks(), blocks);
      EXPECT_GT(sched.prefix_hit_tokens(), 0u);
      if (blocks == 24) {
        EXPECT_GT(sched.preemptions(), 0u);
        EXPECT_GT(sched.blocks().evictions(), 0u);
      }
    }
  }
}

TEST(PrefixCacheSchedulerTest, ScoreRequestsShareTheContext) {
  SequenceSpec s;
  s.score = true;
  s.prompt = Range(50, 13);
  std::vector<std::vector<float>> without, with;
  for (bool caching : {false, true}) {
    Scheduler sched(64, kBlockSize, Options(caching));
    BlockPipeline pipe(64);
    uint64_t step = 0;
    for (const std::vector<int32_t>& cont : {std::vector<int32_t>{1, 2}, {3}, {4, 5, 6, 7, 8}}) {
      s.continuation = cont;
      Collect c;
      sched.Add(s, &c);
      Drain(sched, pipe, 2, &step);
      ASSERT_EQ(c.reason, Finish::kStop);
      ASSERT_EQ(c.score.size(), cont.size());
      (caching ? with : without).push_back(c.score);
    }
    // The context's 3 full blocks are reused by the second and third;
    // its last token is computed, whose row scores the first continuation
    // token.
    EXPECT_EQ(sched.prefix_hit_tokens(), caching ? 2u * 12 : 0u);
    EXPECT_EQ(sched.blocks().used_blocks(), 0);
  }
  EXPECT_EQ(with, without);
}

TEST(PrefixCacheSchedulerTest, TakeAllAndFailAllReleaseSharedBlocks) {
  Scheduler sched(32, kBlockSize, Options(true));
  BlockPipeline pipe(32);
  uint64_t step = 0;
  SequenceSpec s;
  s.prompt = Range(1, 10);
  s.max_tokens = 20;
  Collect a, b, c;
  sched.Add(s, &a);
  for (int i = 0; i < 3; ++i) sched.OnResult(pipe.Run(*sched.NextStep(++step)));
  sched.Add(s, &b);
  sched.Add(s, &c);
  auto in_flight = sched.NextStep(++step);
  ASSERT_TRUE(in_flight);
  EXPECT_GT(sched.prefix_hit_tokens(), 0u);
  EXPECT_GT(sched.blocks().used_blocks(), 0);
  auto taken = sched.TakeAll();
  EXPECT_EQ(taken.size(), 3u);
  EXPECT_EQ(sched.blocks().used_blocks(), 0);
  Scheduler other(32, kBlockSize, Options(true));
  for (auto& [spec, sink] : taken) other.Add(spec, sink);
  other.NextStep(++step);
  other.FailAll(Finish::kUnavailable, "down");
  EXPECT_EQ(other.blocks().used_blocks(), 0);
  EXPECT_TRUE(a.done && b.done && c.done);
}

}  // namespace
}  // namespace strata::router
