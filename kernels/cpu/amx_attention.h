// Causal GQA attention on AMX tiles over a bf16 paged KV cache, for every
// row of a step on the amx ISA (prompt chunks and decode tokens alike: a
// token's output must not depend on whether it came in a chunk of one).
//
// One call serves one (sequence, KV head): its new tokens t in [0, n) sit
// at step rows row0 + t and see cache indexes [0, cached + t]. The query
// heads of the group go together as "virtual rows" (token, head), 16 per
// tile. Scores are S^T = K Q^T (K rows are tile rows as the cache stores
// them; Q is laid out as k pairs once per block), the softmax is the
// vector backend's (scale, max, exp, sum, divide, in key order), and the
// output is P V with V laid out as key pairs once per call. Q and P are
// rounded to bf16 for the tiles, so outputs differ from the f32 kernel by
// bf16 rounding; each row's value depends on its own keys only (padding
// keys add exact zeros), never on the rows that share its tile.
#ifndef STRATA_KERNELS_CPU_AMX_ATTENTION_H_
#define STRATA_KERNELS_CPU_AMX_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "kernels/step_layout.h"

namespace strata::kernels::cpu {

struct AmxAttentionArgs {
  const float* q = nullptr;  // [rows, q_heads, d], after RoPE
  int64_t q_heads = 0;       // q_heads % kv_heads == 0, q_heads / kv_heads <= 16
  int64_t kv_heads = 0;
  int64_t d = 0;                  // head_dim, a multiple of 32, at most 256
  const uint16_t* k = nullptr;    // the layer's K: [slots][kv_heads][d] bf16
  const uint16_t* v = nullptr;    // the layer's V, same layout
  float scale = 0;                // 1 / sqrt(d)
  float* out = nullptr;           // [rows, q_heads, d]
};

// Whether the tile kernel serves these shapes (otherwise the vector one).
bool AmxAttentionFits(int64_t q_heads, int64_t kv_heads, int64_t d);

// KV head h of one sequence: tokens [0, n) at rows row0 + t; slots[i] is
// cache index i's slot (i < cached + n). Requires AmxStatus().ok().
// Thread-safe (per-thread scratch).
void AmxAttentionHead(const AmxAttentionArgs& a, int64_t h, int64_t row0, int64_t n, int64_t cached,
                      const int64_t* slots);

// Every (sequence, KV head) of a step on the pool; slots[i][j]: sequence
// i's cache index j's slot. A task serves its whole query group and lays
// its keys and values out for the tiles once.
void AmxAttentionStep(ThreadPool& pool, const StepLayout& layout, const std::vector<std::vector<int64_t>>& slots,
                      const AmxAttentionArgs& a);

// The same function in plain C++, bit for bit (the tile model of
// amx_matmul.h for both products).
void AmxAttentionHeadTwin(const AmxAttentionArgs& a, int64_t h, int64_t row0, int64_t n, int64_t cached,
                          const int64_t* slots);

}  // namespace strata::kernels::cpu

#endif  // STRATA_KERNELS_CPU_AMX_ATTENTION_H_
