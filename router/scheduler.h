// Continuous batching for one pipeline replica: sequences join and leave the
// running set at every step; each step (micro-batch) takes decode tokens
// first, then prompt chunks within a token budget (chunked prefill, so long
// prompts never stall decoding); KV blocks come from the replica's
// BlockManager, and when they run out the lowest-priority, latest sequence
// is preempted by recompute (its blocks freed, its tokens kept, prefilled
// again later: nothing is lost or repeated). A sequence is in at most one
// step in flight, so up to S steps can be in flight for S stages; with
// micro_batches = S each takes its share of the active sequences, so the S
// steps are of balanced size (SchedulerOptions::micro_batches).
//
// Prefix caching: once a step's result says a full block's KV is computed,
// the block is published under the hash of its tokens chained to the blocks
// before it (BlockManager); a sequence being admitted takes the longest
// chain of cached blocks of its tokens and starts its prompt after them
// (cached_tokens), so a worker computes only the rest. The last prompt
// token is always computed (its logits are needed), and so is every token
// a Score request scores.
//
// Pure logic, no threads or network: the engine calls it from one thread.
#ifndef STRATA_ROUTER_SCHEDULER_H_
#define STRATA_ROUTER_SCHEDULER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "router/block_manager.h"
#include "transport/wire.h"

namespace strata::router {

enum class Finish { kStop, kLength, kCancelled, kError, kUnavailable };

struct TokenOut {
  int32_t id = 0;
  float logprob = 0;
  std::vector<transport::TokenLogprob> top;
};

// Where a sequence's output goes (a request's stream). Called on the
// engine's thread.
class SequenceSink {
 public:
  virtual ~SequenceSink() = default;
  virtual void Token(const TokenOut& token) = 0;
  // The last call. `score`: a Score request's continuation logprobs.
  virtual void Finished(Finish reason, int32_t prompt_tokens, int32_t completion_tokens, const std::string& error,
                        const std::vector<float>& score) = 0;
};

struct SequenceSpec {
  std::vector<int32_t> prompt;
  transport::Sampling sampling;    // step is filled in per token
  int32_t max_tokens = 16;
  std::vector<int32_t> stop_ids;   // EOS ids (unless ignore_eos) and stop_token_ids
  int32_t logprobs = -1;           // -1: none; 0: the chosen token's; n: also the top n
  int32_t priority = 0;            // higher first; preempted last
  std::vector<int32_t> continuation;  // Score: tokens to score after the prompt
  bool score = false;
  // A sequence that moved from another replica: the last `generated` ids of
  // `prompt` are output already sent; they count toward max_tokens and the
  // sampling step, and usage reports them as completion tokens.
  int32_t generated = 0;
  // How many times it moved to another replica so far (the dispatcher's
  // max_migrations bounds it).
  int32_t migrations = 0;
};

struct SchedulerOptions {
  int64_t max_tokens_per_step = 256;  // the chunked-prefill budget
  int64_t max_seqs_per_step = 64;
  // Micro-batches: with S stages, each step takes at most ceil(active / S)
  // sequences (active: every sequence running or waiting) and its share of
  // the prompt tokens pending, so S steps of balanced size are in flight,
  // one per stage, instead of one step with every sequence and S - 1
  // stages idle. 1: a step takes all it can.
  int64_t micro_batches = 1;
  // Dynamic chunking (SGLang's habit): a prompt chunk's cost grows with
  // the prefix it attends to, so a chunk of c tokens after a prefix of p
  // counts c * (1 + (p + c / 2) / attention_context) tokens of the step's
  // budget, and long prompts' chunks shrink as they go, keeping steps (and
  // with micro-batches, the stages) balanced. attention_context is the
  // context length at which a token's attention costs as much as its
  // projections (ChunkingContext); 0: every token counts one.
  int64_t attention_context = 0;
  int64_t context_length = 131072;
  bool prefix_caching = true;
  std::string model;  // where block hash chains start (RootHash)
};

// The context length at which a token's attention (QK^T and PV over its
// prefix, every layer) costs as many FLOPs as its projections (q, k, v, o
// and the SwiGLU MLP): (projection parameters of a layer) / (2 x heads x
// head_dim). Llama 3.2 1B: about 14,800 tokens; Llama 3.1 405B: about
// 97,000. 0 for a shape without heads.
int64_t ChunkingContext(int64_t hidden, int64_t intermediate, int64_t heads, int64_t kv_heads, int64_t head_dim);

// The longest chunk of at most `remaining` tokens, after a prefix of
// `prefix`, whose cost (SchedulerOptions::attention_context) fits `budget`;
// at least 1 while budget > 0.
int64_t ChunkThatFits(int64_t remaining, int64_t prefix, int64_t budget, int64_t attention_context);

class Scheduler {
 public:
  Scheduler(int64_t num_blocks, int64_t block_size, const SchedulerOptions& options);

  // Queues a sequence (validated by the caller). `sink` must outlive it.
  uint64_t Add(SequenceSpec spec, SequenceSink* sink);
  // Ends a sequence with kCancelled: at once when it is not in a step in
  // flight, else when that step returns. Unknown ids are ignored.
  void Cancel(uint64_t seq_id);

  // The next micro-batch from the sequences not in flight, or nothing.
  std::optional<transport::StepPlan> NextStep(uint64_t step_id);
  // Applies a step's result (tokens, logprobs) and finishes sequences that
  // stop. A result with an error ends that step's sequences with kError.
  void OnResult(const transport::StepResult& result);
  // Ends every sequence (in flight or not) with `reason` and `error`; all
  // blocks return to the pool.
  void FailAll(Finish reason, const std::string& error);
  // Takes every sequence out to continue elsewhere: each as a spec whose
  // prompt holds what it had (prompt plus the tokens generated so far, with
  // `generated` set), with its sink. Cancelled ones end here; all blocks
  // return to the pool, and results of the steps in flight are ignored.
  std::vector<std::pair<SequenceSpec, SequenceSink*>> TakeAll();

  // Prompt tokens a sequence of `spec` would take from the prefix cache if
  // it were admitted now (0 with prefix caching off); for replica choice.
  int64_t CachedPrefixTokens(const SequenceSpec& spec) const;

  int64_t waiting() const;
  int64_t running() const;
  int64_t in_flight_steps() const { return static_cast<int64_t>(steps_.size()); }
  bool empty() const { return seqs_.empty(); }
  const BlockManager& blocks() const { return blocks_; }
  uint64_t preemptions() const { return preemptions_; }
  // At each admission (again after a preemption, as vLLM counts): the
  // sequence's tokens, and those its cached prefix covered.
  uint64_t prefix_queried_tokens() const { return prefix_queried_tokens_; }
  uint64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }

 private:
  struct Seq {
    uint64_t id = 0;
    uint64_t arrival = 0;
    SequenceSpec spec;
    SequenceSink* sink = nullptr;
    std::vector<int32_t> tokens;  // prompt (+ continuation) + generated
    int32_t prompt_tokens = 0;
    int32_t generated = 0;
    int64_t computed = 0;         // tokens whose KV is in the cache
    std::vector<int32_t> table;   // KV blocks
    std::vector<BlockHash> hashes;  // of the full blocks of tokens, as far as computed
    size_t published = 0;         // leading blocks of table that are in the prefix cache
    uint64_t in_flight_step = 0;  // 0: none
    int32_t in_flight_tokens = 0;
    bool running = false;         // admitted (holds blocks) vs waiting
    bool cancelled = false;
    std::vector<float> score;     // prompt logprobs, by token position - 1
  };

  void Finish(Seq* s, Finish reason, const std::string& error);
  // Blocks of `tokens` a new sequence may take from the cache: the full
  // blocks before its last prompt token (a Score request's: before the
  // first scored token's predecessor, whose row gives its logprob).
  int64_t ReusableBlocks(const SequenceSpec& spec, size_t tokens) const;
  // Admission: the cached prefix into an empty table (computed moves past
  // it); counts the query and the hit.
  void TakeCachedPrefix(Seq* s);
  // Publishes the sequence's full blocks whose KV is now computed.
  void PublishComputed(Seq* s);
  void ReleaseBlocks(Seq* s);
  // Preempts the lowest-priority, latest running sequence not in flight
  // (possibly `self`); false when there is none.
  bool PreemptOne(Seq* self, Seq** victim);

  BlockManager blocks_;
  SchedulerOptions options_;
  std::map<uint64_t, std::unique_ptr<Seq>> seqs_;
  std::map<uint64_t, std::vector<uint64_t>> steps_;  // step id -> its sequences
  uint64_t next_id_ = 1;
  uint64_t arrivals_ = 0;
  uint64_t preemptions_ = 0;
  BlockHash root_;
  uint64_t prefix_queried_tokens_ = 0;
  uint64_t prefix_hit_tokens_ = 0;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_SCHEDULER_H_
