#include "worker/stage_executor.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "model/make_model.h"
#include "model/rope.h"
#include "model/stage_place.h"
#include "base/status_macros.h"

namespace strata::worker {
namespace {

using kernels::Buffer;
using kernels::Weight;

}  // namespace

StageExecutor::StageExecutor(kernels::Backend* backend, const model::LlamaConfig& config,
                             const StageSpec& spec, Communicator* comm)
    : backend_(backend),
      config_(config),
      spec_(spec),
      comm_(comm),
      dims_(DimsForRank(config, spec.tp_rank, spec.tp_size)),
      inv_freq_(model::RopeInverseFrequencies(config)) {}

absl::StatusOr<std::unique_ptr<StageExecutor>> StageExecutor::Load(kernels::Backend* backend,
                                                                   const model::Checkpoint& checkpoint,
                                                                   const StageSpec& spec,
                                                                   Communicator* comm) {
  const model::LlamaConfig& c = checkpoint.config();
  if (spec.first_layer < 0 || spec.first_layer > spec.last_layer || spec.last_layer > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("stage layer range [", spec.first_layer, ", ",
                                                   spec.last_layer, ") is not inside [0, ",
                                                   c.num_layers, ")"));
  }
  if (spec.movable_begin && spec.has_embedding) {
    return absl::InvalidArgumentError("the first stage's begin cannot move: it holds the embedding");
  }
  if (spec.movable_end && spec.has_lm_head) {
    return absl::InvalidArgumentError("the last stage's end cannot move: it holds the lm_head");
  }
  for (const bool shifted : {false, true}) {
    const int64_t b = spec.BeginHalf(shifted), e = spec.EndHalf(shifted);
    if (b < 0 || e > 2 * c.num_layers || b >= e) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stage layer range [", spec.first_layer, ", ", spec.last_layer, ") holds no layer, whole or in part",
          shifted ? " with its movable boundaries moved" : "", ": half layers [", model::HalfLayerString(b), ", ",
          model::HalfLayerString(e), ") of [0, ", c.num_layers, ")"));
    }
  }
  STRATA_RETURN_IF_ERROR(ValidateTp(c, spec.tp_rank, spec.tp_size));
  if (spec.tp_size > 1 && (comm == nullptr || comm->rank() != spec.tp_rank || comm->size() != spec.tp_size)) {
    return absl::InvalidArgumentError(absl::StrCat("tp rank ", spec.tp_rank, " of ", spec.tp_size,
                                                   " needs a communicator of that rank and size"));
  }
  std::unique_ptr<StageExecutor> ex(new StageExecutor(backend, c, spec, comm));
  auto load = [&](const std::string& name, std::vector<int64_t> shape,
                  TensorRole role) -> absl::StatusOr<std::unique_ptr<Weight>> {
    STRATA_ASSIGN_OR_RETURN(model::TensorView t, checkpoint.Find(name));
    if (t.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(checkpoint.dir(), ": tensor ", name, " has shape ",
                                                     t.ShapeString(), ", config.json implies ",
                                                     model::ShapeString(shape)));
    }
    const int64_t rows = shape.size() == 2 ? shape[0] : 1;
    const int64_t cols = shape.back();
    kernels::WeightSlice slice = SliceFor(role, rows, cols, spec.tp_rank, spec.tp_size);
    const int64_t slice_rows = (slice.row_end < 0 ? rows : slice.row_end) - slice.row_begin;
    const int64_t slice_cols = (slice.col_end < 0 ? cols : slice.col_end) - slice.col_begin;
    ex->weight_bytes_ += static_cast<uint64_t>(slice_rows * slice_cols) * (t.num_bytes / (rows * cols));
    model::AdviseWillNeed(t, slice.row_begin, slice.row_begin + slice_rows, slice.col_begin,
                          slice.col_begin + slice_cols);
    return backend->LoadWeight(t, slice);
  };
  const int64_t h = c.hidden_size;
  if (spec.has_embedding) {
    STRATA_ASSIGN_OR_RETURN(ex->embedding_,
                            load("model.embed_tokens.weight", {c.vocab_size, h}, TensorRole::kVocabParallel));
  }
  // Every half the stage may run: where its boundaries were placed, and
  // where they move to when shifted (only MLP halves differ).
  const int64_t b0 = spec.BeginHalf(false), e0 = spec.EndHalf(false);
  const int64_t b1 = spec.BeginHalf(true), e1 = spec.EndHalf(true);
  const int64_t lo = std::min(b0, b1), hi = std::max(e0, e1);
  int64_t kv_layers = 0;
  for (int64_t l = lo / 2; 2 * l < hi; ++l) {
    Layer layer;
    auto name = [&](const char* suffix) { return model::LayerTensorName(l, suffix); };
    constexpr TensorRole kNorm = TensorRole::kNorm, kCol = TensorRole::kColumnParallel,
                         kRow = TensorRole::kRowParallel;
    if (2 * l >= lo) {  // attention halves never move: in [b0, e0) exactly when in [lo, hi)
      STRATA_ASSIGN_OR_RETURN(layer.input_norm, load(name("input_layernorm.weight"), {h}, kNorm));
      STRATA_ASSIGN_OR_RETURN(layer.q, load(name("self_attn.q_proj.weight"), {c.q_size(), h}, kCol));
      STRATA_ASSIGN_OR_RETURN(layer.k, load(name("self_attn.k_proj.weight"), {c.kv_size(), h}, kCol));
      STRATA_ASSIGN_OR_RETURN(layer.v, load(name("self_attn.v_proj.weight"), {c.kv_size(), h}, kCol));
      STRATA_ASSIGN_OR_RETURN(layer.o, load(name("self_attn.o_proj.weight"), {h, c.q_size()}, kRow));
      layer.kv_layer = kv_layers++;
    }
    const int64_t mlp = 2 * l + 1;
    const bool unshifted = mlp >= b0 && mlp < e0, shifted = mlp >= b1 && mlp < e1;
    if (unshifted || shifted) {
      STRATA_ASSIGN_OR_RETURN(layer.post_norm, load(name("post_attention_layernorm.weight"), {h}, kNorm));
      STRATA_ASSIGN_OR_RETURN(layer.gate, load(name("mlp.gate_proj.weight"), {c.intermediate_size, h}, kCol));
      STRATA_ASSIGN_OR_RETURN(layer.up, load(name("mlp.up_proj.weight"), {c.intermediate_size, h}, kCol));
      STRATA_ASSIGN_OR_RETURN(layer.down, load(name("mlp.down_proj.weight"), {h, c.intermediate_size}, kRow));
      layer.mlp_when = unshifted && shifted ? Layer::When::kAlways
                       : unshifted          ? Layer::When::kUnshifted
                                            : Layer::When::kShifted;
    }
    ex->layers_.push_back(std::move(layer));
  }
  if (spec.has_lm_head) {
    STRATA_ASSIGN_OR_RETURN(ex->final_norm_, load("model.norm.weight", {h}, TensorRole::kNorm));
    const bool tied = c.tie_word_embeddings && !checkpoint.Has("lm_head.weight");
    STRATA_ASSIGN_OR_RETURN(ex->lm_head_, load(tied ? "model.embed_tokens.weight" : "lm_head.weight",
                                               {c.vocab_size, h}, TensorRole::kVocabParallel));
  }
  return ex;
}

int64_t StageSpec::BeginHalf(bool shifted) const {
  const int64_t b = 2 * first_layer + (starts_at_mlp ? 1 : 0);
  return shifted && movable_begin ? model::ShiftedHalf(b) : b;
}

int64_t StageSpec::EndHalf(bool shifted) const {
  const int64_t e = 2 * last_layer - (ends_after_attention ? 1 : 0);
  return shifted && movable_end ? model::ShiftedHalf(e) : e;
}

absl::Status StageExecutor::SetBoundariesShifted(bool shifted) {
  if (shifted && !spec_.movable_begin && !spec_.movable_end) {
    return absl::FailedPreconditionError(
        "the step moves the stage boundaries, but this stage holds no movable boundary (worker "
        "--movable-boundaries)");
  }
  shifted_ = shifted;
  return absl::OkStatus();
}

absl::Status StageExecutor::AllReduce(float* data, int64_t n) {
  if (spec_.tp_size == 1) return absl::OkStatus();
  return comm_->AllReduceSum(data, n);
}

kernels::KvCacheShape StageExecutor::KvShape(int64_t num_blocks, int64_t block_size) const {
  kernels::KvCacheShape s;
  s.num_layers = std::max<int64_t>(spec_.NumAttentionLayers(), 1);
  s.num_blocks = num_blocks;
  s.block_size = block_size;
  s.num_kv_heads = dims_.num_kv_heads;
  s.head_dim = config_.head_dim;
  return s;
}

int64_t StageExecutor::KvBytesPerBlock(int64_t block_size) const {
  return std::max<int64_t>(spec_.NumAttentionLayers(), 1) * 2 * block_size * dims_.num_kv_heads *
         config_.head_dim * backend_->KvBytesPerValue();
}

absl::Status StageExecutor::EnsureScratch(int64_t rows, int64_t logit_rows) {
  const model::LlamaConfig& c = config_;
  if (rows > scratch_.rows) {
    auto alloc = [&](int64_t width, std::unique_ptr<Buffer>* b) -> absl::Status {
      STRATA_ASSIGN_OR_RETURN(*b, backend_->AllocateBuffer(rows * width));
      return absl::OkStatus();
    };
    STRATA_RETURN_IF_ERROR(alloc(c.hidden_size, &scratch_.x));
    STRATA_RETURN_IF_ERROR(alloc(c.hidden_size, &scratch_.norm));
    const int64_t q = dims_.q_size(c.head_dim), kv = dims_.kv_size(c.head_dim);
    STRATA_RETURN_IF_ERROR(alloc(q, &scratch_.q));
    STRATA_RETURN_IF_ERROR(alloc(kv, &scratch_.k));
    STRATA_RETURN_IF_ERROR(alloc(kv, &scratch_.v));
    STRATA_RETURN_IF_ERROR(alloc(q, &scratch_.attn));
    STRATA_RETURN_IF_ERROR(alloc(c.hidden_size, &scratch_.proj));
    STRATA_RETURN_IF_ERROR(alloc(dims_.intermediate, &scratch_.gate));
    STRATA_RETURN_IF_ERROR(alloc(dims_.intermediate, &scratch_.up));
    STRATA_RETURN_IF_ERROR(alloc(dims_.intermediate, &scratch_.act));
    scratch_.rows = rows;
  }
  if (logit_rows > scratch_.logit_rows) {
    STRATA_ASSIGN_OR_RETURN(scratch_.gathered, backend_->AllocateBuffer(logit_rows * c.hidden_size));
    STRATA_ASSIGN_OR_RETURN(scratch_.gathered_norm, backend_->AllocateBuffer(logit_rows * c.hidden_size));
    STRATA_ASSIGN_OR_RETURN(scratch_.logits, backend_->AllocateBuffer(logit_rows * dims_.vocab));
    scratch_.all_logits.reset();  // at the new size when next used (WholeLogits)
    scratch_.vocab_logits.reset();
    scratch_.greedy_pairs.reset();  // ForwardGreedy's, likewise
    scratch_.all_greedy_pairs.reset();
    scratch_.logit_rows = logit_rows;
  }
  return absl::OkStatus();
}

absl::Status StageExecutor::Validate(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                                     absl::Span<const float> hidden_in, const std::vector<int64_t>& logit_rows,
                                     const kernels::KvCache& cache) const {
  const model::LlamaConfig& c = config_;
  const kernels::KvCacheShape& kv = cache.shape();
  if (kv.num_kv_heads != dims_.num_kv_heads || kv.head_dim != c.head_dim ||
      kv.num_layers < spec_.NumAttentionLayers()) {
    return absl::InvalidArgumentError("KV cache shape does not match this stage");
  }
  STRATA_RETURN_IF_ERROR(kernels::ValidateStepLayout(layout, kv, c.max_position_embeddings));
  const int64_t rows = layout.NumRows();
  const int64_t h = c.hidden_size;
  if (spec_.has_embedding) {
    if (static_cast<int64_t>(token_ids.size()) != rows) {
      return absl::InvalidArgumentError(absl::StrCat("step has ", rows, " token rows but ",
                                                     token_ids.size(), " token ids"));
    }
    for (size_t i = 0; i < token_ids.size(); ++i) {
      if (token_ids[i] < 0 || token_ids[i] >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", token_ids[i], " at row ", i,
                                                       " is outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      }
    }
  } else if (static_cast<int64_t>(hidden_in.size()) != rows * h) {
    return absl::InvalidArgumentError(absl::StrCat("hidden input has ", hidden_in.size(),
                                                   " floats, expected ", rows, " x ", h));
  }
  if (spec_.has_lm_head) {
    for (int64_t r : logit_rows) {
      if (r < 0 || r >= rows) {
        return absl::InvalidArgumentError(absl::StrCat("logit row ", r, " is outside [0, ", rows, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status StageExecutor::RunLayers(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                                      absl::Span<const float> hidden_in, const std::vector<int64_t>& logit_rows,
                                      kernels::KvCache* cache) {
  STRATA_RETURN_IF_ERROR(Validate(layout, token_ids, hidden_in, logit_rows, *cache));
  const int64_t rows = layout.NumRows();
  const int64_t h = config_.hidden_size;
  STRATA_RETURN_IF_ERROR(EnsureScratch(rows, spec_.has_lm_head ? static_cast<int64_t>(logit_rows.size()) : 0));
  STRATA_RETURN_IF_ERROR(backend_->BeginStep(layout));

  kernels::Backend& b = *backend_;
  float* x = scratch_.x->data();
  if (spec_.has_embedding) {
    if (spec_.tp_size == 1) {
      b.Embed(*embedding_, token_ids.data(), rows, x);
    } else {
      // Vocab-parallel: ids this rank does not own embed as zero rows; the
      // all-reduce then assembles every row from its owner.
      local_ids_.resize(rows);
      for (int64_t i = 0; i < rows; ++i) {
        local_ids_[i] = static_cast<int32_t>(token_ids[i] - dims_.vocab_begin);
      }
      b.Embed(*embedding_, local_ids_.data(), rows, x);
      STRATA_RETURN_IF_ERROR(AllReduce(x, rows * h));
    }
  } else {
    STRATA_RETURN_IF_ERROR(b.CopyFromHost(hidden_in.data(), rows * h, x));
  }
  for (size_t i = 0; i < layers_.size(); ++i) STRATA_RETURN_IF_ERROR(RunLayer(i, rows, cache));
  return absl::OkStatus();
}

absl::Status StageExecutor::RunLayer(size_t index, int64_t rows, kernels::KvCache* cache) {
  const model::LlamaConfig& c = config_;
  const Layer& L = layers_[index];
  const int64_t layer = L.kv_layer;
  const int64_t h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  kernels::Backend& b = *backend_;
  float* x = scratch_.x->data();
  float* norm = scratch_.norm->data();
  float* q = scratch_.q->data();
  float* k = scratch_.k->data();
  float* v = scratch_.v->data();
  if (L.q != nullptr) {  // else the previous stage ran it
    b.RmsNorm(x, *L.input_norm, eps, rows, norm);
    b.MatMulShared(norm, rows, {L.q.get(), L.k.get(), L.v.get()}, {q, k, v});
    b.Rope(q, dims_.num_heads, c.head_dim, inv_freq_);
    b.Rope(k, dims_.num_kv_heads, c.head_dim, inv_freq_);
    b.WriteKv(*cache, layer, k, v);
    b.Attention(*cache, layer, q, dims_.num_heads, scratch_.attn->data());
    b.MatMul(scratch_.attn->data(), rows, *L.o, scratch_.proj->data());
    STRATA_RETURN_IF_ERROR(AllReduce(scratch_.proj->data(), rows * h));
    b.Add(x, scratch_.proj->data(), rows * h);
  }
  if (L.gate == nullptr) return absl::OkStatus();  // the next stage runs the MLP
  if (L.mlp_when != Layer::When::kAlways && (L.mlp_when == Layer::When::kShifted) != shifted_) {
    return absl::OkStatus();  // the stage across the movable boundary runs it this step
  }
  b.RmsNorm(x, *L.post_norm, eps, rows, norm);
  b.MatMulShared(norm, rows, {L.gate.get(), L.up.get()}, {scratch_.gate->data(), scratch_.up->data()});
  b.SwiGlu(scratch_.gate->data(), scratch_.up->data(), rows, dims_.intermediate, scratch_.act->data());
  b.MatMul(scratch_.act->data(), rows, *L.down, scratch_.proj->data());
  STRATA_RETURN_IF_ERROR(AllReduce(scratch_.proj->data(), rows * h));
  b.Add(x, scratch_.proj->data(), rows * h);
  return absl::OkStatus();
}

absl::StatusOr<float*> StageExecutor::WholeLogits(std::unique_ptr<kernels::Buffer>* b) {
  if (*b == nullptr) {
    STRATA_ASSIGN_OR_RETURN(*b, backend_->AllocateBuffer(scratch_.logit_rows * config_.vocab_size));
  }
  return (*b)->data();
}

void StageExecutor::LocalLogits(const std::vector<int64_t>& logit_rows) {
  const int64_t n = static_cast<int64_t>(logit_rows.size());
  const model::LlamaConfig& c = config_;
  kernels::Backend& b = *backend_;
  b.GatherRows(scratch_.x->data(), c.hidden_size, logit_rows.data(), n, scratch_.gathered->data());
  b.RmsNorm(scratch_.gathered->data(), *final_norm_, static_cast<float>(c.rms_norm_eps), n,
            scratch_.gathered_norm->data());
  b.MatMul(scratch_.gathered_norm->data(), n, *lm_head_, scratch_.logits->data());
}

absl::StatusOr<const float*> StageExecutor::Logits(const std::vector<int64_t>& logit_rows, LogitsTo to) {
  const int64_t n = static_cast<int64_t>(logit_rows.size());
  if (n == 0) return nullptr;
  LocalLogits(logit_rows);
  return GatherLogits(n, to);
}

absl::StatusOr<const float*> StageExecutor::GatherLogits(int64_t n, LogitsTo to) {
  kernels::Backend& b = *backend_;
  if (spec_.tp_size == 1) return scratch_.logits->data();
  const int64_t part = dims_.vocab, t = spec_.tp_size;
  const bool root = spec_.tp_rank == 0;
  if (to == LogitsTo::kRankZero && comm_->gathers_columns_to_root()) {
    // Rank 0 receives every rank's [n][V/T] as columns of [n][V]: at 64
    // decode rows of a 128,256 vocabulary, 33 MB per rank copied once
    // instead of the all-gather's three copies and rank 0's relayout.
    float* out = nullptr;
    if (root) {
      STRATA_ASSIGN_OR_RETURN(out, WholeLogits(&scratch_.vocab_logits));
    }
    STRATA_RETURN_IF_ERROR(comm_->GatherColumnsToRoot(scratch_.logits->data(), n, part, out));
    return out;
  }
  // Vocab-parallel lm_head: gather [T][n][V/T], then interleave into [n][V]
  // on the backend: as rows of V/T floats, row i * T + r of the result is
  // row r * n + i of the gathered block.
  STRATA_ASSIGN_OR_RETURN(float* all, WholeLogits(&scratch_.all_logits));
  STRATA_RETURN_IF_ERROR(comm_->AllGather(scratch_.logits->data(), n * part, all));
  if (to == LogitsTo::kRankZero && !root) return nullptr;
  interleave_rows_.resize(n * t);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = 0; r < t; ++r) interleave_rows_[i * t + r] = r * n + i;
  }
  STRATA_ASSIGN_OR_RETURN(float* rows, WholeLogits(&scratch_.vocab_logits));
  b.GatherRows(all, part, interleave_rows_.data(), n * t, rows);
  return rows;
}

absl::StatusOr<const float*> StageExecutor::ForwardLogits(const kernels::StepLayout& layout,
                                                          const std::vector<int32_t>& token_ids,
                                                          absl::Span<const float> hidden_in,
                                                          const std::vector<int64_t>& logit_rows,
                                                          kernels::KvCache* cache, LogitsTo to) {
  if (!spec_.has_lm_head) return absl::FailedPreconditionError("ForwardLogits on a stage without the lm_head");
  STRATA_RETURN_IF_ERROR(RunLayers(layout, token_ids, hidden_in, logit_rows, cache));
  STRATA_ASSIGN_OR_RETURN(const float* logits, Logits(logit_rows, to));
  STRATA_RETURN_IF_ERROR(backend_->Synchronize());
  return logits;
}

bool StageExecutor::IsPlainGreedy(const kernels::SampleRequest& q) {
  const kernels::SamplingParams& p = q.params;
  // The values ValidateSampleRequests accepts, drawn without randomness.
  const bool valid = std::isfinite(p.temperature) && p.temperature >= 0.0f && p.top_k >= 0 && p.top_p > 0.0f &&
                     p.top_p <= 1.0f;
  return q.sample && q.logprobs == -1 && q.target == -1 && valid && (p.temperature == 0.0f || p.top_k == 1);
}

absl::Status StageExecutor::ForwardGreedy(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                                          absl::Span<const float> hidden_in, const std::vector<int64_t>& logit_rows,
                                          kernels::KvCache* cache, absl::Span<const kernels::SampleRequest> requests,
                                          absl::Span<kernels::SampleResult> results) {
  if (!spec_.has_lm_head) return absl::FailedPreconditionError("ForwardGreedy on a stage without the lm_head");
  const int64_t n = static_cast<int64_t>(logit_rows.size());
  if (static_cast<int64_t>(requests.size()) != n || static_cast<int64_t>(results.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardGreedy: ", n, " logit rows, ", requests.size(),
                                                   " requests, ", results.size(), " results"));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!IsPlainGreedy(requests[i])) {
      return absl::InvalidArgumentError(absl::StrCat("ForwardGreedy: row ", i, " is not a plain greedy draw"));
    }
  }
  kernels::Backend& b = *backend_;
  STRATA_RETURN_IF_ERROR(RunLayers(layout, token_ids, hidden_in, logit_rows, cache));
  if (n == 0) return b.Synchronize();
  LocalLogits(logit_rows);
  if (spec_.tp_size == 1) {
    STRATA_RETURN_IF_ERROR(b.Sample(scratch_.logits->data(), config_.vocab_size, requests, results));
    return b.Synchronize();
  }
  // Each rank draws from its own slice: the first maximum of a row is the
  // first maximum of the slice that holds the row's largest value, the
  // lowest rank among equals.
  const int64_t part = dims_.vocab, t = spec_.tp_size;
  STRATA_RETURN_IF_ERROR(b.Sample(scratch_.logits->data(), part, requests, results));
  if (scratch_.greedy_pairs == nullptr) {
    STRATA_ASSIGN_OR_RETURN(scratch_.greedy_pairs, b.AllocateBuffer(2 * scratch_.logit_rows));
    STRATA_ASSIGN_OR_RETURN(scratch_.all_greedy_pairs, b.AllocateBuffer(2 * scratch_.logit_rows * t));
  }
  // [values of the slice winners][their vocabulary ids as floats, exact
  // below 2^24 (LlamaConfig's limit on the vocabulary); -1 where the slice gave none].
  winner_rows_.resize(n);
  winner_ids_.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t local = results[i].token;
    const bool ok = local >= 0 && local < part;
    winner_rows_[i] = i * part + (ok ? local : 0);
    winner_ids_[i] = ok ? static_cast<float>(dims_.vocab_begin + local) : -1.0f;
  }
  float* pairs = scratch_.greedy_pairs->data();
  b.GatherRows(scratch_.logits->data(), 1, winner_rows_.data(), n, pairs);
  STRATA_RETURN_IF_ERROR(b.CopyFromHost(winner_ids_.data(), n, pairs + n));
  STRATA_RETURN_IF_ERROR(comm_->AllGather(pairs, 2 * n, scratch_.all_greedy_pairs->data()));
  all_pairs_.resize(2 * n * t);
  STRATA_RETURN_IF_ERROR(b.CopyToHost(scratch_.all_greedy_pairs->data(), 2 * n * t, all_pairs_.data()));
  STRATA_RETURN_IF_ERROR(b.Synchronize());
  // Every rank holds the same pairs, so every rank takes the same branch.
  bool whole_rows = false;
  for (int64_t r = 0; r < t && !whole_rows; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      const float value = all_pairs_[r * 2 * n + i], id = all_pairs_[r * 2 * n + n + i];
      if (std::isnan(value) || id < 0.0f) {
        whole_rows = true;
        break;
      }
    }
  }
  if (!whole_rows) {
    for (int64_t i = 0; i < n; ++i) {
      int64_t best = 0;
      for (int64_t r = 1; r < t; ++r) {
        if (all_pairs_[r * 2 * n + i] > all_pairs_[best * 2 * n + i]) best = r;
      }
      results[i].token = static_cast<int32_t>(all_pairs_[best * 2 * n + n + i]);
    }
    return absl::OkStatus();
  }
  // A NaN (or a slice without a winner): the whole rows decide, on rank 0,
  // as Backend::Sample draws them.
  STRATA_ASSIGN_OR_RETURN(const float* logits, GatherLogits(n, LogitsTo::kRankZero));
  if (spec_.tp_rank == 0) STRATA_RETURN_IF_ERROR(b.Sample(logits, config_.vocab_size, requests, results));
  return b.Synchronize();
}

absl::Status StageExecutor::Forward(const kernels::StepLayout& layout, const std::vector<int32_t>& token_ids,
                                    absl::Span<const float> hidden_in, const std::vector<int64_t>& logit_rows,
                                    kernels::KvCache* cache, std::vector<float>* out, float* hidden_out) {
  kernels::Backend& b = *backend_;
  if (!spec_.has_lm_head) {
    STRATA_RETURN_IF_ERROR(RunLayers(layout, token_ids, hidden_in, logit_rows, cache));
    const int64_t n = layout.NumRows() * config_.hidden_size;
    if (hidden_out == nullptr) {
      out->resize(n);
      hidden_out = out->data();
    }
    STRATA_RETURN_IF_ERROR(b.CopyToHost(scratch_.x->data(), n, hidden_out));
    return b.Synchronize();
  }
  STRATA_ASSIGN_OR_RETURN(const float* logits, ForwardLogits(layout, token_ids, hidden_in, logit_rows, cache));
  const int64_t n = static_cast<int64_t>(logit_rows.size()) * config_.vocab_size;
  out->resize(n);
  if (n == 0) return absl::OkStatus();
  STRATA_RETURN_IF_ERROR(b.CopyToHost(logits, n, out->data()));
  return b.Synchronize();
}

}  // namespace strata::worker
