#include "kernels/reference/ops.h"

#include <cmath>
#include <cstring>

#include "model/rope.h"

namespace strata::kernels::reference {

void Embed(const float* table, int64_t rows, int64_t cols, const int32_t* ids, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= rows) {
      std::memset(out + i * cols, 0, cols * sizeof(float));
    } else {
      std::memcpy(out + i * cols, table + static_cast<int64_t>(ids[i]) * cols, cols * sizeof(float));
    }
  }
}

void RmsNorm(const float* x, const float* w, float eps, int64_t rows, int64_t dim, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float sum_sq = 0.0f;
    for (int64_t i = 0; i < dim; ++i) sum_sq += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(sum_sq / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = w[i] * (xr[i] * inv);
  }
}

void MatMul(const float* x, int64_t rows, const float* w, int64_t in_features,
            int64_t out_features, int64_t out_begin, int64_t out_end, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * in_features;
    for (int64_t o = out_begin; o < out_end; ++o) {
      const float* wr = w + o * in_features;
      float acc = 0.0f;
      for (int64_t i = 0; i < in_features; ++i) acc += xr[i] * wr[i];
      y[r * out_features + o] = acc;
    }
  }
}

std::vector<int64_t> RowPositions(const StepLayout& layout) {
  std::vector<int64_t> positions;
  for (const SequenceChunk& s : layout.sequences) {
    for (int32_t t = 0; t < s.num_tokens; ++t) {
      positions.push_back(s.position_offset + s.cached_tokens + t);
    }
  }
  return positions;
}

void Rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, const int64_t* positions,
          const std::vector<float>& inv_freq) {
  std::vector<float> cos(head_dim / 2), sin(head_dim / 2);
  for (int64_t r = 0; r < rows; ++r) {
    model::RopeCosSin(inv_freq, positions[r], cos.data(), sin.data());
    for (int64_t h = 0; h < heads; ++h) {
      model::ApplyRotaryToHead(x + (r * heads + h) * head_dim, head_dim, cos.data(), sin.data());
    }
  }
}

namespace {

// Offset in floats of cache index `index` of a sequence inside one layer.
int64_t SlotOffset(const SequenceChunk& s, const KvCacheShape& shape, int64_t index) {
  const int64_t block = s.block_table[index / shape.block_size];
  const int64_t slot = index % shape.block_size;
  return (block * shape.block_size + slot) * shape.num_kv_heads * shape.head_dim;
}

}  // namespace

void WriteKv(const StepLayout& layout, const KvCacheShape& shape, const float* k, const float* v,
             float* k_cache, float* v_cache) {
  const int64_t width = shape.num_kv_heads * shape.head_dim;
  int64_t row = 0;
  for (const SequenceChunk& s : layout.sequences) {
    for (int32_t t = 0; t < s.num_tokens; ++t, ++row) {
      const int64_t off = SlotOffset(s, shape, s.cached_tokens + t);
      std::memcpy(k_cache + off, k + row * width, width * sizeof(float));
      std::memcpy(v_cache + off, v + row * width, width * sizeof(float));
    }
  }
}

void Attention(const StepLayout& layout, const KvCacheShape& shape, const float* k_cache,
               const float* v_cache, const float* q, int64_t q_heads, float* out) {
  const int64_t d = shape.head_dim;
  const int64_t group = q_heads / shape.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<float> scores;
  int64_t row = 0;
  for (const SequenceChunk& s : layout.sequences) {
    for (int32_t t = 0; t < s.num_tokens; ++t, ++row) {
      const int64_t visible = s.cached_tokens + t + 1;  // causal: up to and including itself
      scores.resize(visible);
      for (int64_t h = 0; h < q_heads; ++h) {
        const int64_t kvh = h / group;
        const float* qh = q + (row * q_heads + h) * d;
        float max_score = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          const float* kj = k_cache + SlotOffset(s, shape, j) + kvh * d;
          float dot = 0.0f;
          for (int64_t i = 0; i < d; ++i) dot += qh[i] * kj[i];
          scores[j] = dot * scale;
          max_score = std::max(max_score, scores[j]);
        }
        float denom = 0.0f;
        for (int64_t j = 0; j < visible; ++j) {
          scores[j] = std::exp(scores[j] - max_score);
          denom += scores[j];
        }
        float* oh = out + (row * q_heads + h) * d;
        for (int64_t i = 0; i < d; ++i) oh[i] = 0.0f;
        for (int64_t j = 0; j < visible; ++j) {
          const float p = scores[j] / denom;
          const float* vj = v_cache + SlotOffset(s, shape, j) + kvh * d;
          for (int64_t i = 0; i < d; ++i) oh[i] += p * vj[i];
        }
      }
    }
  }
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace strata::kernels::reference
