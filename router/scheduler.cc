#include "router/scheduler.h"

#include <algorithm>
#include <cmath>

namespace strata::router {

Scheduler::Scheduler(int64_t num_blocks, int64_t block_size, const SchedulerOptions& options)
    : blocks_(num_blocks, block_size), options_(options), root_(RootHash(options.model)) {}

uint64_t Scheduler::Add(SequenceSpec spec, SequenceSink* sink) {
  auto s = std::make_unique<Seq>();
  s->id = next_id_++;
  s->arrival = arrivals_++;
  s->sink = sink;
  s->tokens = spec.prompt;
  if (spec.score) s->tokens.insert(s->tokens.end(), spec.continuation.begin(), spec.continuation.end());
  s->prompt_tokens = static_cast<int32_t>(s->tokens.size());
  s->generated = spec.generated;
  s->spec = std::move(spec);
  const uint64_t id = s->id;
  seqs_[id] = std::move(s);
  return id;
}

int64_t Scheduler::waiting() const {
  int64_t n = 0;
  for (const auto& [id, s] : seqs_) n += s->running ? 0 : 1;
  return n;
}

int64_t Scheduler::running() const { return static_cast<int64_t>(seqs_.size()) - waiting(); }

int64_t Scheduler::ReusableBlocks(const SequenceSpec& spec, size_t tokens) const {
  const int64_t must_compute_from =
      static_cast<int64_t>(spec.score ? spec.prompt.size() : tokens) - 1;
  return must_compute_from > 0 ? must_compute_from / blocks_.block_size() : 0;
}

int64_t Scheduler::CachedPrefixTokens(const SequenceSpec& spec) const {
  if (!options_.prefix_caching) return 0;
  std::vector<int32_t> tokens = spec.prompt;
  if (spec.score) tokens.insert(tokens.end(), spec.continuation.begin(), spec.continuation.end());
  const int64_t max_blocks = ReusableBlocks(spec, tokens.size());
  std::vector<BlockHash> hashes;
  ExtendBlockHashes(root_, tokens, blocks_.block_size(), max_blocks, &hashes);
  return blocks_.Match(hashes, max_blocks) * blocks_.block_size();
}

void Scheduler::TakeCachedPrefix(Seq* s) {
  if (!options_.prefix_caching) return;
  const int64_t max_blocks = ReusableBlocks(s->spec, s->tokens.size());
  ExtendBlockHashes(root_, s->tokens, blocks_.block_size(), max_blocks, &s->hashes);
  const int64_t n = blocks_.AcquireCached(s->hashes, max_blocks, &s->table);
  s->computed = n * blocks_.block_size();
  s->published = static_cast<size_t>(n);
}

void Scheduler::PublishComputed(Seq* s) {
  if (!options_.prefix_caching) return;
  const int64_t full = s->computed / blocks_.block_size();
  ExtendBlockHashes(root_, s->tokens, blocks_.block_size(), full, &s->hashes);
  for (; static_cast<int64_t>(s->published) < full; ++s->published) {
    blocks_.Publish(s->table[s->published], s->hashes[s->published]);
  }
}

void Scheduler::ReleaseBlocks(Seq* s) {
  blocks_.Release(&s->table);
  s->published = 0;
}

void Scheduler::Finish(Seq* s, ::strata::router::Finish reason, const std::string& error) {
  ReleaseBlocks(s);
  std::vector<float> score;
  if (s->spec.score && reason == Finish::kStop) {
    // Logprob of token p sits at score[p - 1]; the continuation starts at
    // the prompt's length.
    const size_t first = s->spec.prompt.size();
    for (size_t p = first; p < s->tokens.size(); ++p) score.push_back(s->score[p - 1]);
  }
  SequenceSink* sink = s->sink;
  const int32_t prompt = static_cast<int32_t>(s->spec.prompt.size()) - s->spec.generated;
  const int32_t completion = s->spec.score ? 0 : s->generated;
  seqs_.erase(s->id);
  sink->Finished(reason, prompt, completion, error, score);
}

void Scheduler::Cancel(uint64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return;
  Seq* s = it->second.get();
  s->cancelled = true;
  if (s->in_flight_step == 0) Finish(s, Finish::kCancelled, "");
}

bool Scheduler::PreemptOne(Seq* self, Seq** victim) {
  Seq* best = nullptr;
  for (auto& [id, s] : seqs_) {
    Seq* c = s.get();
    if (!c->running || c->in_flight_step != 0 || c->table.empty()) continue;
    if (best == nullptr || c->spec.priority < best->spec.priority ||
        (c->spec.priority == best->spec.priority && c->arrival > best->arrival)) {
      best = c;
    }
  }
  if (best == nullptr) return false;
  // Never preempt a sequence that outranks the one asking.
  if (best != self && (best->spec.priority > self->spec.priority ||
                       (best->spec.priority == self->spec.priority && best->arrival < self->arrival))) {
    return false;
  }
  ReleaseBlocks(best);
  best->computed = 0;
  best->running = false;
  ++preemptions_;
  *victim = best;
  return true;
}

int64_t ChunkingContext(int64_t hidden, int64_t intermediate, int64_t heads, int64_t kv_heads, int64_t head_dim) {
  const int64_t q = heads * head_dim;
  if (q <= 0) return 0;
  const int64_t projections = hidden * (2 * q + 2 * kv_heads * head_dim) + 3 * hidden * intermediate;
  return std::max<int64_t>(projections / (2 * q), 1);
}

namespace {

// A chunk's cost in budget tokens: c * (1 + (p + c / 2) / L), rounded.
int64_t ChunkCost(int64_t c, int64_t p, int64_t l) {
  if (l <= 0) return c;
  return std::llround(static_cast<double>(c) * (1.0 + (static_cast<double>(p) + static_cast<double>(c) / 2) / l));
}

}  // namespace

int64_t ChunkThatFits(int64_t remaining, int64_t prefix, int64_t budget, int64_t attention_context) {
  if (remaining <= 0 || budget <= 0) return 0;
  if (attention_context <= 0) return std::min(remaining, budget);
  // The largest c with ChunkCost(c) <= budget (cost rises with c): the
  // quadratic's root, then corrected by a step either way for rounding.
  const double l = static_cast<double>(attention_context), a = 1.0 + static_cast<double>(prefix) / l;
  int64_t c = static_cast<int64_t>(l * (std::sqrt(a * a + 2.0 * static_cast<double>(budget) / l) - a));
  c = std::clamp<int64_t>(c, 1, remaining);
  while (c < remaining && ChunkCost(c + 1, prefix, attention_context) <= budget) ++c;
  while (c > 1 && ChunkCost(c, prefix, attention_context) > budget) --c;
  return c;
}

std::optional<transport::StepPlan> Scheduler::NextStep(uint64_t step_id) {
  // Candidates: running first (decodes, then prompt chunks), then waiting;
  // each group by priority, then arrival.
  std::vector<Seq*> order;
  for (auto& [id, s] : seqs_) {
    if (s->in_flight_step == 0 && !s->cancelled) order.push_back(s.get());
  }
  std::sort(order.begin(), order.end(), [](const Seq* a, const Seq* b) {
    const bool ad = a->running && a->tokens.size() - a->computed == 1;
    const bool bd = b->running && b->tokens.size() - b->computed == 1;
    if (a->running != b->running) return a->running;
    if (ad != bd) return ad;
    if (a->spec.priority != b->spec.priority) return a->spec.priority > b->spec.priority;
    return a->arrival < b->arrival;
  });
  transport::StepPlan plan;
  plan.step_id = step_id;
  int64_t budget = options_.max_tokens_per_step;
  int64_t max_decodes = options_.max_seqs_per_step, decodes = 0;
  if (options_.micro_batches > 1) {
    const int64_t mb = options_.micro_batches;
    int64_t active = 0, prompt_pending = 0, prompting = 0;
    for (const auto& [id, q] : seqs_) {
      if (q->cancelled) continue;
      ++active;
      const int64_t remaining = static_cast<int64_t>(q->tokens.size()) - q->computed;
      if (q->in_flight_step == 0 && !(q->running && remaining == 1)) {
        prompt_pending += remaining;
        ++prompting;
      }
    }
    // Decoding sequences are shared by count, and the prompt tokens waiting
    // by tokens (never less than a block's worth), so the steps balance in
    // rows and a prompt always finds room beside the decodes. The prompt
    // tokens are shared over no more steps than there are sequences with
    // prompt tokens waiting: a sequence is in one step at a time, so what
    // this step leaves of a lone prompt waits until this step is back,
    // and a prompt cut in S chunks would pass the stages S times in a row.
    max_decodes = std::max<int64_t>((active + mb - 1) / mb, 1);
    const int64_t spread = std::clamp<int64_t>(prompting, 1, mb);
    const int64_t prompt_share = std::max((prompt_pending + spread - 1) / spread, blocks_.block_size());
    budget = std::min(budget, max_decodes + prompt_share);
  }
  const int64_t step_budget = budget;
  std::vector<uint64_t> members;
  // Once this step preempted, it admits nobody (as vLLM's scheduler): the
  // pool is overcommitted, and a sequence admitted now, or a victim taken
  // back at once with its cached prefix, would only be preempted again.
  bool preempted = false;
  for (Seq* s : order) {
    if (budget <= 0 || static_cast<int64_t>(plan.sequences.size()) >= options_.max_seqs_per_step) break;
    const bool admitting = !s->running;
    if (admitting && preempted) continue;
    if (admitting) TakeCachedPrefix(s);
    const int64_t remaining = static_cast<int64_t>(s->tokens.size()) - s->computed;
    if (remaining <= 0) continue;
    const bool decode = !admitting && remaining == 1;
    if (decode && decodes >= max_decodes) continue;
    const int64_t num = decode ? 1 : ChunkThatFits(remaining, s->computed, budget, options_.attention_context);
    // With micro-batches, a prompt starts in a step with room for at least
    // a block of it (else in the next step, which another stage runs).
    // (Or with all the room an empty step gives it, when that is less.)
    if (admitting && options_.micro_batches > 1 &&
        num < std::min({remaining, blocks_.block_size(),
                        ChunkThatFits(remaining, s->computed, step_budget, options_.attention_context)})) {
      // Waits for the next step holding nothing, as an admission that does
      // not fit the pool does (its cached prefix is taken again then).
      ReleaseBlocks(s);
      s->computed = 0;
      break;
    }
    bool grown = blocks_.Grow(&s->table, s->computed + num);
    if (!grown && s->running) {
      // Out of blocks: preempt (by recompute) until this one fits or is
      // itself the victim.
      Seq* victim = nullptr;
      while (!grown && PreemptOne(s, &victim)) {
        preempted = true;
        if (victim == s) break;
        grown = blocks_.Grow(&s->table, s->computed + num);
      }
      if (victim == s) continue;
    }
    if (!grown) {
      if (!s->running) {
        // Admission is first come, first served: wait, holding nothing.
        ReleaseBlocks(s);
        s->computed = 0;
        break;
      }
      continue;
    }
    if (admitting && options_.prefix_caching) {
      prefix_queried_tokens_ += s->tokens.size();
      prefix_hit_tokens_ += static_cast<uint64_t>(s->computed);
    }
    s->running = true;
    transport::PlanSequence ps;
    ps.seq_id = s->id;
    ps.num_tokens = static_cast<int32_t>(num);
    ps.cached_tokens = static_cast<int32_t>(s->computed);
    ps.block_table = s->table;
    const bool completes = s->computed + num == static_cast<int64_t>(s->tokens.size());
    if (s->spec.score) {
      ps.prompt_logprobs = true;
      ps.next_token_id = completes ? -1 : s->tokens[s->computed + num];
    } else {
      ps.sample = completes;
      ps.sampling = s->spec.sampling;
      ps.sampling.step = static_cast<uint64_t>(s->generated);
      ps.logprobs = s->spec.logprobs;
    }
    plan.sequences.push_back(std::move(ps));
    plan.token_ids.insert(plan.token_ids.end(), s->tokens.begin() + s->computed,
                          s->tokens.begin() + s->computed + num);
    s->in_flight_step = step_id;
    s->in_flight_tokens = static_cast<int32_t>(num);
    decodes += decode ? 1 : 0;
    members.push_back(s->id);
    budget -= decode ? 1 : ChunkCost(num, s->computed, options_.attention_context);
  }
  if (plan.sequences.empty()) return std::nullopt;
  steps_[step_id] = std::move(members);
  return plan;
}

void Scheduler::OnResult(const transport::StepResult& r) {
  auto step = steps_.find(r.step_id);
  if (step == steps_.end()) return;  // not ours, or already failed
  const std::vector<uint64_t> members = std::move(step->second);
  steps_.erase(step);
  std::map<uint64_t, const transport::SequenceResult*> by_id;
  for (const transport::SequenceResult& sr : r.sequences) by_id[sr.seq_id] = &sr;
  for (uint64_t id : members) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) continue;
    Seq* s = it->second.get();
    if (s->in_flight_step != r.step_id) continue;
    s->in_flight_step = 0;
    if (!r.ok()) {
      Finish(s, Finish::kError, r.error);
      continue;
    }
    const int64_t start = s->computed;
    s->computed += s->in_flight_tokens;
    PublishComputed(s);
    if (s->cancelled) {
      Finish(s, Finish::kCancelled, "");
      continue;
    }
    auto found = by_id.find(id);
    if (found == by_id.end()) {
      Finish(s, Finish::kError, "the step result did not include this sequence");
      continue;
    }
    const transport::SequenceResult& sr = *found->second;
    if (s->spec.score) {
      s->score.resize(s->tokens.size(), 0.0f);
      for (size_t t = 0; t < sr.prompt_logprobs.size() && start + static_cast<int64_t>(t) < static_cast<int64_t>(s->score.size()); ++t) {
        s->score[start + t] = sr.prompt_logprobs[t];
      }
      if (s->computed == static_cast<int64_t>(s->tokens.size())) Finish(s, Finish::kStop, "");
      continue;
    }
    if (sr.token < 0) continue;  // a prompt chunk that did not reach the end
    s->tokens.push_back(sr.token);
    s->generated += 1;
    s->sink->Token(TokenOut{sr.token, sr.logprob, sr.top});
    if (std::find(s->spec.stop_ids.begin(), s->spec.stop_ids.end(), sr.token) != s->spec.stop_ids.end()) {
      Finish(s, Finish::kStop, "");
    } else if (s->generated >= s->spec.max_tokens ||
               static_cast<int64_t>(s->tokens.size()) >= options_.context_length) {
      Finish(s, Finish::kLength, "");
    }
  }
}

std::vector<std::pair<SequenceSpec, SequenceSink*>> Scheduler::TakeAll() {
  std::vector<std::pair<SequenceSpec, SequenceSink*>> out;
  steps_.clear();
  while (!seqs_.empty()) {
    Seq* s = seqs_.begin()->second.get();
    if (s->cancelled) {
      Finish(s, Finish::kCancelled, "");
      continue;
    }
    SequenceSpec spec = std::move(s->spec);
    if (!spec.score) {
      spec.prompt = s->tokens;  // Score sequences start over: they emit only at the end
      spec.generated = s->generated;
    }
    ReleaseBlocks(s);
    out.emplace_back(std::move(spec), s->sink);
    seqs_.erase(seqs_.begin());
  }
  return out;
}

void Scheduler::FailAll(::strata::router::Finish reason, const std::string& error) {
  steps_.clear();
  while (!seqs_.empty()) Finish(seqs_.begin()->second.get(), reason, error);
}

}  // namespace strata::router
