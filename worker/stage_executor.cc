#include "worker/stage_executor.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "model/make_model.h"
#include "model/rope.h"
#include "third_party/status_macros.h"

namespace strata::worker {
namespace {

using kernels::Buffer;
using kernels::Weight;

}  // namespace

StageExecutor::StageExecutor(kernels::Backend* backend, const model::LlamaConfig& config,
                             const StageSpec& spec)
    : backend_(backend), config_(config), spec_(spec), inv_freq_(model::RopeInverseFrequencies(config)) {}

absl::StatusOr<std::unique_ptr<StageExecutor>> StageExecutor::Load(kernels::Backend* backend,
                                                                   const model::Checkpoint& checkpoint,
                                                                   const StageSpec& spec) {
  const model::LlamaConfig& c = checkpoint.config();
  if (spec.first_layer < 0 || spec.first_layer > spec.last_layer || spec.last_layer > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("stage layer range [", spec.first_layer, ", ",
                                                   spec.last_layer, ") is not inside [0, ",
                                                   c.num_layers, ")"));
  }
  std::unique_ptr<StageExecutor> ex(new StageExecutor(backend, c, spec));
  auto load = [&](const std::string& name,
                  std::vector<int64_t> shape) -> absl::StatusOr<std::unique_ptr<Weight>> {
    STRATA_ASSIGN_OR_RETURN(model::TensorView t, checkpoint.Find(name));
    if (t.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(checkpoint.dir(), ": tensor ", name, " has shape ",
                                                     t.ShapeString(), ", config.json implies ",
                                                     model::ShapeString(shape)));
    }
    ex->weight_bytes_ += t.num_bytes;
    return backend->LoadWeight(t, {});
  };
  const int64_t h = c.hidden_size;
  if (spec.has_embedding) {
    STRATA_ASSIGN_OR_RETURN(ex->embedding_, load("model.embed_tokens.weight", {c.vocab_size, h}));
  }
  for (int64_t l = spec.first_layer; l < spec.last_layer; ++l) {
    Layer layer;
    auto name = [&](const char* suffix) { return model::LayerTensorName(l, suffix); };
    STRATA_ASSIGN_OR_RETURN(layer.input_norm, load(name("input_layernorm.weight"), {h}));
    STRATA_ASSIGN_OR_RETURN(layer.q, load(name("self_attn.q_proj.weight"), {c.q_size(), h}));
    STRATA_ASSIGN_OR_RETURN(layer.k, load(name("self_attn.k_proj.weight"), {c.kv_size(), h}));
    STRATA_ASSIGN_OR_RETURN(layer.v, load(name("self_attn.v_proj.weight"), {c.kv_size(), h}));
    STRATA_ASSIGN_OR_RETURN(layer.o, load(name("self_attn.o_proj.weight"), {h, c.q_size()}));
    STRATA_ASSIGN_OR_RETURN(layer.post_norm, load(name("post_attention_layernorm.weight"), {h}));
    STRATA_ASSIGN_OR_RETURN(layer.gate, load(name("mlp.gate_proj.weight"), {c.intermediate_size, h}));
    STRATA_ASSIGN_OR_RETURN(layer.up, load(name("mlp.up_proj.weight"), {c.intermediate_size, h}));
    STRATA_ASSIGN_OR_RETURN(layer.down, load(name("mlp.down_proj.weight"), {h, c.intermediate_size}));
    ex->layers_.push_back(std::move(layer));
  }
  if (spec.has_lm_head) {
    STRATA_ASSIGN_OR_RETURN(ex->final_norm_, load("model.norm.weight", {h}));
    const bool tied = c.tie_word_embeddings && !checkpoint.Has("lm_head.weight");
    STRATA_ASSIGN_OR_RETURN(ex->lm_head_,
                            load(tied ? "model.embed_tokens.weight" : "lm_head.weight", {c.vocab_size, h}));
  }
  return ex;
}

kernels::KvCacheShape StageExecutor::KvShape(int64_t num_blocks, int64_t block_size) const {
  kernels::KvCacheShape s;
  s.num_layers = std::max<int64_t>(spec_.last_layer - spec_.first_layer, 1);
  s.num_blocks = num_blocks;
  s.block_size = block_size;
  s.num_kv_heads = config_.num_kv_heads;
  s.head_dim = config_.head_dim;
  return s;
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
    STRATA_RETURN_IF_ERROR(alloc(c.q_size(), &scratch_.q));
    STRATA_RETURN_IF_ERROR(alloc(c.kv_size(), &scratch_.k));
    STRATA_RETURN_IF_ERROR(alloc(c.kv_size(), &scratch_.v));
    STRATA_RETURN_IF_ERROR(alloc(c.q_size(), &scratch_.attn));
    STRATA_RETURN_IF_ERROR(alloc(c.hidden_size, &scratch_.proj));
    STRATA_RETURN_IF_ERROR(alloc(c.intermediate_size, &scratch_.gate));
    STRATA_RETURN_IF_ERROR(alloc(c.intermediate_size, &scratch_.up));
    STRATA_RETURN_IF_ERROR(alloc(c.intermediate_size, &scratch_.act));
    scratch_.rows = rows;
  }
  if (logit_rows > scratch_.logit_rows) {
    STRATA_ASSIGN_OR_RETURN(scratch_.gathered, backend_->AllocateBuffer(logit_rows * c.hidden_size));
    STRATA_ASSIGN_OR_RETURN(scratch_.gathered_norm, backend_->AllocateBuffer(logit_rows * c.hidden_size));
    STRATA_ASSIGN_OR_RETURN(scratch_.logits, backend_->AllocateBuffer(logit_rows * c.vocab_size));
    scratch_.logit_rows = logit_rows;
  }
  return absl::OkStatus();
}

absl::Status StageExecutor::Forward(const kernels::StepLayout& layout,
                                    const std::vector<int32_t>& token_ids,
                                    const std::vector<float>& hidden_in,
                                    const std::vector<int64_t>& logit_rows, kernels::KvCache* cache,
                                    std::vector<float>* out) {
  const model::LlamaConfig& c = config_;
  const kernels::KvCacheShape& kv = cache->shape();
  if (kv.num_kv_heads != c.num_kv_heads || kv.head_dim != c.head_dim ||
      kv.num_layers < static_cast<int64_t>(layers_.size())) {
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
  STRATA_RETURN_IF_ERROR(EnsureScratch(rows, spec_.has_lm_head ? static_cast<int64_t>(logit_rows.size()) : 0));
  STRATA_RETURN_IF_ERROR(backend_->BeginStep(layout));

  kernels::Backend& b = *backend_;
  float* x = scratch_.x->data();
  if (spec_.has_embedding) {
    b.Embed(*embedding_, token_ids.data(), rows, x);
  } else {
    STRATA_RETURN_IF_ERROR(b.CopyFromHost(hidden_in.data(), rows * h, x));
  }
  const float eps = static_cast<float>(c.rms_norm_eps);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& L = layers_[i];
    float* norm = scratch_.norm->data();
    float* q = scratch_.q->data();
    float* k = scratch_.k->data();
    float* v = scratch_.v->data();
    b.RmsNorm(x, *L.input_norm, eps, rows, norm);
    b.MatMulShared(norm, rows, {L.q.get(), L.k.get(), L.v.get()}, {q, k, v});
    b.Rope(q, c.num_heads, c.head_dim, inv_freq_);
    b.Rope(k, c.num_kv_heads, c.head_dim, inv_freq_);
    b.WriteKv(*cache, static_cast<int64_t>(i), k, v);
    b.Attention(*cache, static_cast<int64_t>(i), q, c.num_heads, scratch_.attn->data());
    b.MatMul(scratch_.attn->data(), rows, *L.o, scratch_.proj->data());
    b.Add(x, scratch_.proj->data(), rows * h);
    b.RmsNorm(x, *L.post_norm, eps, rows, norm);
    b.MatMulShared(norm, rows, {L.gate.get(), L.up.get()}, {scratch_.gate->data(), scratch_.up->data()});
    b.SwiGlu(scratch_.gate->data(), scratch_.up->data(), rows, c.intermediate_size, scratch_.act->data());
    b.MatMul(scratch_.act->data(), rows, *L.down, scratch_.proj->data());
    b.Add(x, scratch_.proj->data(), rows * h);
  }
  if (!spec_.has_lm_head) {
    out->resize(rows * h);
    STRATA_RETURN_IF_ERROR(b.CopyToHost(x, rows * h, out->data()));
    return b.Synchronize();
  }
  const int64_t n = static_cast<int64_t>(logit_rows.size());
  out->resize(n * c.vocab_size);
  if (n == 0) return b.Synchronize();
  b.GatherRows(x, h, logit_rows.data(), n, scratch_.gathered->data());
  b.RmsNorm(scratch_.gathered->data(), *final_norm_, eps, n, scratch_.gathered_norm->data());
  b.MatMul(scratch_.gathered_norm->data(), n, *lm_head_, scratch_.logits->data());
  STRATA_RETURN_IF_ERROR(b.CopyToHost(scratch_.logits->data(), n * c.vocab_size, out->data()));
  return b.Synchronize();
}

}  // namespace strata::worker
