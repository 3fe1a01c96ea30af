#include "kernels/cuda/sampling.h"

#include <climits>

namespace strata::kernels::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// Block-wide reductions through one shared slot per warp. Every thread gets
// the result. `scratch` must not be in use by another reduction.
template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op, T* scratch) {
  for (int off = 16; off > 0; off /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // the previous reduction's readers are done
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int i = 1; i < kWarps; ++i) r = op(r, scratch[i]);
  return r;
}

struct SumD { __device__ double operator()(double a, double b) const { return a + b; } };
struct MaxU {
  __device__ unsigned long long operator()(unsigned long long a, unsigned long long b) const { return a > b ? a : b; }
};
struct MaxF { __device__ float operator()(float a, float b) const { return fmaxf(a, b); } };
struct SumF { __device__ float operator()(float a, float b) const { return a + b; } };
struct SumI { __device__ int64_t operator()(int64_t a, int64_t b) const { return a + b; } };
struct MinI { __device__ int64_t operator()(int64_t a, int64_t b) const { return a < b ? a : b; } };
struct MaxI { __device__ int64_t operator()(int64_t a, int64_t b) const { return a > b ? a : b; } };

__global__ void __launch_bounds__(kThreads)
SampleKernel(const float* __restrict__ logits, int64_t vocab, const SamplingParams* __restrict__ params,
             float* __restrict__ scratch, int32_t* __restrict__ out_ids) {
  __shared__ float f_red[kWarps];
  __shared__ int64_t i_red[kWarps];
  __shared__ float prefix[kThreads];
  const int64_t row = blockIdx.x;
  const float* l = logits + row * vocab;
  float* w = scratch + row * vocab;
  const SamplingParams p = params[row];
  const int tid = threadIdx.x;

  float mx = -INFINITY;
  for (int64_t i = tid; i < vocab; i += kThreads) mx = fmaxf(mx, l[i]);
  mx = BlockReduce(mx, MaxF(), f_red);
  // Lowest id holding the maximum.
  int64_t arg = LLONG_MAX;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    if (l[i] == mx && i < arg) arg = i;
  }
  arg = BlockReduce(arg, MinI(), i_red);
  if (p.temperature <= 0.0f || p.top_k == 1) {
    if (tid == 0) out_ids[row] = static_cast<int32_t>(arg);
    return;
  }
  // Contiguous chunks per thread, used by every pass (each thread reads only
  // the probabilities it wrote until the final scan).
  const int64_t chunk = (vocab + kThreads - 1) / kThreads;
  const int64_t begin = min(vocab, tid * chunk), end = min(vocab, begin + chunk);
  for (int64_t i = begin; i < end; ++i) w[i] = expf((l[i] - mx) / p.temperature);

  uint32_t tau = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    uint32_t ans = 0;
    for (int bit = 30; bit >= 0; --bit) {
      const uint32_t cand = ans | (1u << bit);
      int64_t count = 0;
      for (int64_t i = begin; i < end; ++i) count += __float_as_uint(w[i]) >= cand;
      count = BlockReduce(count, SumI(), i_red);
      if (count >= p.top_k) ans = cand;
    }
    tau = ans;
  }
  if (p.top_p < 1.0f) {
    float mass = 0.0f;
    for (int64_t i = begin; i < end; ++i) {
      if (__float_as_uint(w[i]) >= tau) mass += w[i];
    }
    const float need = p.top_p * BlockReduce(mass, SumF(), f_red);
    uint32_t ans = 0;
    for (int bit = 30; bit >= 0; --bit) {
      const uint32_t cand = ans | (1u << bit);
      const uint32_t t = cand > tau ? cand : tau;
      float m = 0.0f;
      for (int64_t i = begin; i < end; ++i) {
        if (__float_as_uint(w[i]) >= t) m += w[i];
      }
      m = BlockReduce(m, SumF(), f_red);
      if (m >= need) ans = cand;
    }
    tau = ans > tau ? ans : tau;
  }
  float local = 0.0f;
  int64_t last = -1;
  for (int64_t i = begin; i < end; ++i) {
    if (__float_as_uint(w[i]) >= tau) {
      local += w[i];
      last = i;
    }
  }
  // Inclusive scan of the per-thread masses (Hillis-Steele in shared memory).
  prefix[tid] = local;
  __syncthreads();
  for (int off = 1; off < kThreads; off *= 2) {
    const float add = tid >= off ? prefix[tid - off] : 0.0f;
    __syncthreads();
    prefix[tid] += add;
    __syncthreads();
  }
  const float total = prefix[kThreads - 1];
  const float target = SampleUniform(p.seed, p.step) * total;
  float cum = prefix[tid] - local;
  int64_t pick = LLONG_MAX;
  if (local > 0.0f && cum <= target && target < prefix[tid]) {
    for (int64_t i = begin; i < end; ++i) {
      if (__float_as_uint(w[i]) < tau) continue;
      cum += w[i];
      if (cum > target) {
        pick = i;
        break;
      }
    }
  }
  pick = BlockReduce(pick, MinI(), i_red);
  last = BlockReduce(last, MaxI(), i_red);
  if (tid == 0) out_ids[row] = static_cast<int32_t>(pick != LLONG_MAX ? pick : (last >= 0 ? last : arg));
}

// A key whose order is (logit descending, id ascending) under max: the
// logit's bits made monotone (-0 as +0, as the host compares them), then the
// id inverted. Never 0 for an id below 2^32 - 1.
__device__ unsigned long long RankKey(float v, int64_t id) {
  uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<unsigned long long>(b) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(id));
}

__global__ void __launch_bounds__(kThreads)
ScoreKernel(const float* __restrict__ logits, int64_t vocab, const SampleRequest* __restrict__ requests,
            const int32_t* __restrict__ tokens, SampleResult* __restrict__ results) {
  __shared__ float f_red[kWarps];
  __shared__ double d_red[kWarps];
  __shared__ unsigned long long k_red[kWarps];
  const int64_t row = blockIdx.x;
  const SampleRequest q = requests[row];
  SampleResult* out = results + row;
  const int tid = threadIdx.x;
  const bool logprob = q.sample && q.logprobs >= 0;
  const int n = logprob ? static_cast<int>(min(static_cast<int64_t>(q.logprobs), vocab)) : 0;
  if (tid == 0) {
    out->token = q.sample ? tokens[row] : -1;
    out->logprob = 0.0f;
    out->target_logprob = 0.0f;
    out->num_top = n;
  }
  if (tid >= n && tid < kMaxTopLogprobs) {
    out->top[tid].token = 0;
    out->top[tid].logprob = 0.0f;
  }
  if (!logprob && q.target < 0) return;  // the same for the whole block
  const float* l = logits + row * vocab;
  float mx = -INFINITY;
  for (int64_t i = tid; i < vocab; i += kThreads) mx = fmaxf(mx, l[i]);
  mx = BlockReduce(mx, MaxF(), f_red);
  double sum = 0.0;
  for (int64_t i = tid; i < vocab; i += kThreads) sum += exp(static_cast<double>(l[i] - mx));
  sum = BlockReduce(sum, SumD(), d_red);
  const float log_sum = static_cast<float>(log(sum));
  if (tid == 0) {
    if (logprob) out->logprob = l[tokens[row]] - mx - log_sum;
    if (q.target >= 0) out->target_logprob = l[q.target] - mx - log_sum;
  }
  unsigned long long prev = ~0ull;
  for (int k = 0; k < n; ++k) {
    unsigned long long best = 0;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const unsigned long long key = RankKey(l[i], i);
      if (key < prev && key > best) best = key;
    }
    best = BlockReduce(best, MaxU(), k_red);
    prev = best;
    if (tid == 0) {
      const int64_t id = 0xFFFFFFFFu - static_cast<uint32_t>(best);
      out->top[k].token = static_cast<int32_t>(id);
      out->top[k].logprob = l[id] - mx - log_sum;
    }
  }
}

}  // namespace

cudaError_t LaunchScore(const float* logits, int64_t rows, int64_t vocab, const SampleRequest* requests,
                        const int32_t* tokens, SampleResult* results, cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || vocab > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  ScoreKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, requests, tokens, results);
  return cudaGetLastError();
}

cudaError_t LaunchSample(const float* logits, int64_t rows, int64_t vocab,
                         const SamplingParams* params, float* scratch, int32_t* out_ids,
                         cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || vocab > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  SampleKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, params, scratch,
                                                                     out_ids);
  return cudaGetLastError();
}

}  // namespace strata::kernels::cuda
