// GPU benchmarks with their ceilings measured in the same run:
//   ceilings: device-to-device copy bandwidth, a large bf16 cuBLASLt GEMM;
//   decode attention (405B per-GPU shape: 16 query heads, 1 KV head,
//   head_dim 128) at batch 32 x 8K and batch 1 x 128K against the copy
//   bandwidth; prefill attention at 8K tokens against the GEMM ceiling;
//   one 405B decoder layer's TP-rank-0-of-8 slice through the CUDA backend at
//   batch 1 (against its bandwidth floor) and batch 64 (TFLOP/s); sampling.
// Prints one table. Usage: cuda_bench [--quick]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/sampling.h"
#include "model/dtype.h"

namespace strata::kernels::cuda {
namespace {

#define CHECK_CUDA(expr)                                                              \
  do {                                                                                \
    cudaError_t _e = (expr);                                                          \
    if (_e != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(_e)); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)
#define CHECK_OK(expr)                                                                        \
  do {                                                                                        \
    absl::Status _s = (expr);                                                                 \
    if (!_s.ok()) {                                                                           \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, std::string(_s.message()).c_str()); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

struct Row {
  std::string name, value, ceiling;
};
std::vector<Row> g_rows;
void Report(const std::string& name, const std::string& value, const std::string& ceiling) {
  std::printf("%-58s %-26s %s\n", name.c_str(), value.c_str(), ceiling.c_str());
  std::fflush(stdout);
  g_rows.push_back({name, value, ceiling});
}
std::string Fmt(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), fmt, a, b, c);
  return buf;
}

// Median seconds of `iters` timed runs of fn after `warmup` runs.
double TimeIt(cudaStream_t stream, int warmup, int iters, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    CHECK_CUDA(cudaEventRecord(a, stream));
    fn();
    CHECK_CUDA(cudaEventRecord(b, stream));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double CopyBandwidth(cudaStream_t s, bool quick) {
  const size_t bytes = (quick ? 256ull : 2048ull) << 20;
  void *a, *b;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemsetAsync(a, 1, bytes, s));
  const double t = TimeIt(s, 3, 10, [&] { CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s)); });
  cudaFree(a);
  cudaFree(b);
  const double bw = 2.0 * bytes / t;  // bytes read + bytes written
  Report("ceiling: device-to-device copy (read + write bytes)", Fmt("%.0f GB/s", bw / 1e9), "-");
  return bw;
}

double GemmCeiling(cudaStream_t s, bool quick) {
  const int64_t n = quick ? 4096 : 8192;
  auto gemm = LtGemm::Create();
  CHECK_OK(gemm.status());
  __nv_bfloat16 *x, *w;
  float* y;
  CHECK_CUDA(cudaMalloc(&x, n * n * 2));
  CHECK_CUDA(cudaMalloc(&w, n * n * 2));
  CHECK_CUDA(cudaMalloc(&y, n * n * 4));
  CHECK_CUDA(LaunchFillRandom(x, n * n, 1, 1.0f, s));
  CHECK_CUDA(LaunchFillRandom(w, n * n, 2, 1.0f, s));
  const double t = TimeIt(s, 3, 10, [&] { CHECK_OK((*gemm)->MatMul(x, n, w, n, n, y, s)); });
  cudaFree(x);
  cudaFree(w);
  cudaFree(y);
  const double flops = 2.0 * n * n * n / t;
  Report(Fmt("ceiling: bf16 GEMM %.0f^3 (cuBLASLt, f32 out)", n), Fmt("%.0f TFLOP/s", flops / 1e12), "-");
  return flops;
}

struct AttnSetup {
  StepLayout layout;
  AttentionDims dims;
  int64_t num_blocks = 0;
  int64_t kv_tokens = 0;
};

AttnSetup MakeLayout(int batch, int context, int new_tokens, int q_heads, int kv_heads, int block_size) {
  AttnSetup a;
  a.dims = {q_heads, kv_heads, 128, block_size};
  int32_t next = 0;
  for (int b = 0; b < batch; ++b) {
    SequenceChunk s;
    s.cached_tokens = context - new_tokens;
    s.num_tokens = new_tokens;
    const int blocks = (context + block_size - 1) / block_size;
    for (int i = 0; i < blocks; ++i) s.block_table.push_back(next++);
    a.layout.sequences.push_back(s);
    a.kv_tokens += context;
  }
  a.num_blocks = next;
  return a;
}

// Returns seconds per launch.
double TimeAttention(cudaStream_t s, AttnSetup& a, int sms, int min_split = 128, int blocks_per_sm_target = 4) {
  const int64_t slots = a.num_blocks * a.dims.block_size;
  const int64_t cache = slots * a.dims.kv_heads * 128;
  const int64_t rows = a.layout.NumRows();
  __nv_bfloat16 *k, *v;
  float *q, *out;
  CHECK_CUDA(cudaMalloc(&k, cache * 2));
  CHECK_CUDA(cudaMalloc(&v, cache * 2));
  CHECK_CUDA(cudaMalloc(&q, rows * a.dims.q_heads * 128 * 4));
  CHECK_CUDA(cudaMalloc(&out, rows * a.dims.q_heads * 128 * 4));
  CHECK_CUDA(LaunchFillRandom(k, cache, 3, 1.0f, s));
  CHECK_CUDA(LaunchFillRandom(v, cache, 4, 1.0f, s));
  CHECK_CUDA(LaunchFillRandom(q, rows * a.dims.q_heads * 128, 5, 1.0f, s));
  AttentionPlan plan = MakeAttentionPlan(a.layout, a.dims, blocks_per_sm_target * sms, min_split);
  void* ws;
  CHECK_CUDA(cudaMalloc(&ws, std::max<int64_t>(plan.WorkspaceBytes(), 1)));
  CHECK_CUDA(UploadAttentionPlan(plan, ws, s));
  const double t = TimeIt(s, 5, 20, [&] { CHECK_CUDA(LaunchAttention(plan, ws, q, k, v, out, s)); });
  cudaFree(k);
  cudaFree(v);
  cudaFree(q);
  cudaFree(out);
  cudaFree(ws);
  return t;
}

void DecodeAttention(cudaStream_t s, int sms, double copy_bw, int batch, int context, int q_heads, int kv_heads,
                     int min_split = 128, int target_per_sm = 4) {
  AttnSetup a = MakeLayout(batch, context, 1, q_heads, kv_heads, 16);
  const double t = TimeAttention(s, a, sms, min_split, target_per_sm);
  const double bytes = static_cast<double>(a.kv_tokens) * kv_heads * 128 * 2 * 2;
  const double bw = bytes / t;
  Report(Fmt("decode attention G%.0f kv%.0f d128, batch %.0f", q_heads / kv_heads, kv_heads, batch) +
             Fmt(" x %.0fK", context / 1024.0) + (min_split != 128 ? Fmt(", splits >= %.0f keys", min_split) : "") +
             (target_per_sm != 4 ? Fmt(", aim %.0f blocks/SM", target_per_sm) : ""),
         Fmt("%.1f us, %.0f GB/s", t * 1e6, bw / 1e9), Fmt("%.0f%% of copy bw", 100.0 * bw / copy_bw));
}

void PrefillAttention(cudaStream_t s, int sms, double gemm_flops, int tokens, int q_heads, int kv_heads) {
  AttnSetup a = MakeLayout(1, tokens, tokens, q_heads, kv_heads, 16);
  const double t = TimeAttention(s, a, sms);
  // Causal: QK^T and PV over the lower triangle.
  const double flops = 4.0 * 128 * q_heads * (static_cast<double>(tokens) * (tokens + 1) / 2);
  Report(Fmt("prefill attention G%.0f kv%.0f d128, %.0f tokens", q_heads / kv_heads, kv_heads, tokens),
         Fmt("%.2f ms, %.1f TFLOP/s", t * 1e3, flops / t / 1e12),
         Fmt("%.0f%% of GEMM ceiling", 100.0 * flops / t / gemm_flops));
}

// One 405B decoder layer, TP rank 0 of 8: hidden 16384, 16 query heads, one
// KV head, head_dim 128, FFN 53248 / 8.
void LayerSlice(double copy_bw, int batch, int context) {
  const int64_t hidden = 16384, qh = 16, kvh = 1, d = 128, ffn = 53248 / 8;
  auto backend_or = CudaBackend::Create();
  CHECK_OK(backend_or.status());
  CudaBackend& b = **backend_or;
  struct Spec {
    int64_t rows, cols;
  };
  const Spec specs[] = {{1, hidden}, {qh * d, hidden}, {kvh * d, hidden}, {kvh * d, hidden}, {hidden, qh * d},
                        {1, hidden}, {ffn, hidden},    {ffn, hidden},     {hidden, ffn}};
  std::vector<std::unique_ptr<Weight>> w;
  double weight_bytes = 0;
  std::mt19937 rng(9);
  for (const Spec& sp : specs) {
    std::vector<uint16_t> host(sp.rows * sp.cols);
    uint32_t x = rng();
    for (auto& h : host) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      h = model::FloatToBF16(((x & 0xFFFF) / 32768.0f - 1.0f) * (sp.rows == 1 ? 0.1f : 0.02f) + (sp.rows == 1 ? 1.0f : 0.0f));
    }
    model::TensorView t;
    t.name = "bench";
    t.dtype = model::DType::kBF16;
    t.shape = {sp.rows, sp.cols};
    t.data = reinterpret_cast<const uint8_t*>(host.data());
    t.num_bytes = host.size() * 2;
    auto wt = b.LoadWeight(t, {});
    CHECK_OK(wt.status());
    w.push_back(std::move(*wt));
    weight_bytes += host.size() * 2.0;
  }
  KvCacheShape ks;
  ks.num_layers = 1;
  ks.block_size = 16;
  ks.num_blocks = static_cast<int64_t>(batch) * ((context + 15) / 16);
  ks.num_kv_heads = kvh;
  ks.head_dim = d;
  auto cache = b.AllocateKvCache(ks);
  CHECK_OK(cache.status());
  StepLayout layout;
  int32_t next = 0;
  for (int i = 0; i < batch; ++i) {
    SequenceChunk s;
    s.cached_tokens = context - 1;
    s.num_tokens = 1;
    for (int j = 0; j < (context + 15) / 16; ++j) s.block_table.push_back(next++);
    layout.sequences.push_back(s);
  }
  auto buf = [&](int64_t n) {
    auto r = b.AllocateBuffer(n);
    CHECK_OK(r.status());
    return std::move(*r);
  };
  auto x = buf(batch * hidden), norm = buf(batch * hidden), q = buf(batch * qh * d), k = buf(batch * kvh * d),
       v = buf(batch * kvh * d), attn = buf(batch * qh * d), proj = buf(batch * hidden), gate = buf(batch * ffn),
       up = buf(batch * ffn), act = buf(batch * ffn);
  CHECK_CUDA(LaunchFillRandom(x->data(), batch * hidden, 7, 1.0f, b.stream()));
  std::vector<float> inv_freq(d / 2);
  for (int64_t i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(500000.0f, -2.0f * i / d);
  CHECK_OK(b.BeginStep(layout));
  auto layer = [&] {
    b.RmsNorm(x->data(), *w[0], 1e-5f, batch, norm->data());
    b.MatMulShared(norm->data(), batch, {w[1].get(), w[2].get(), w[3].get()}, {q->data(), k->data(), v->data()});
    b.Rope(q->data(), qh, d, inv_freq);
    b.Rope(k->data(), kvh, d, inv_freq);
    b.WriteKv(**cache, 0, k->data(), v->data());
    b.Attention(**cache, 0, q->data(), qh, attn->data());
    b.MatMul(attn->data(), batch, *w[4], proj->data());
    b.Add(x->data(), proj->data(), batch * hidden);
    b.RmsNorm(x->data(), *w[5], 1e-5f, batch, norm->data());
    b.MatMulShared(norm->data(), batch, {w[6].get(), w[7].get()}, {gate->data(), up->data()});
    b.SwiGlu(gate->data(), up->data(), batch, ffn, act->data());
    b.MatMul(act->data(), batch, *w[8], proj->data());
    b.Add(x->data(), proj->data(), batch * hidden);
  };
  layer();  // builds the attention plan and the GEMM plans
  CHECK_OK(b.Synchronize());
  if (batch == 1) {
    // Where the time goes: each op alone, median of 20.
    struct Op {
      const char* name;
      std::function<void()> fn;
      double bytes;
    };
    const Op ops[] = {
        {"rmsnorm", [&] { b.RmsNorm(x->data(), *w[0], 1e-5f, batch, norm->data()); }, 0},
        {"q_proj", [&] { b.MatMul(norm->data(), batch, *w[1], q->data()); }, 2.0 * qh * d * hidden},
        {"k_proj", [&] { b.MatMul(norm->data(), batch, *w[2], k->data()); }, 2.0 * kvh * d * hidden},
        {"q,k,v in one launch",
         [&] { b.MatMulShared(norm->data(), batch, {w[1].get(), w[2].get(), w[3].get()}, {q->data(), k->data(), v->data()}); },
         2.0 * (qh + 2 * kvh) * d * hidden},
        {"rope q", [&] { b.Rope(q->data(), qh, d, inv_freq); }, 0},
        {"write kv", [&] { b.WriteKv(**cache, 0, k->data(), v->data()); }, 0},
        {"attention", [&] { b.Attention(**cache, 0, q->data(), qh, attn->data()); }, 4.0 * context * kvh * d},
        {"o_proj", [&] { b.MatMul(attn->data(), batch, *w[4], proj->data()); }, 2.0 * hidden * qh * d},
        {"add", [&] { b.Add(x->data(), proj->data(), batch * hidden); }, 0},
        {"gate_proj", [&] { b.MatMul(norm->data(), batch, *w[6], gate->data()); }, 2.0 * ffn * hidden},
        {"gate,up in one launch",
         [&] { b.MatMulShared(norm->data(), batch, {w[6].get(), w[7].get()}, {gate->data(), up->data()}); },
         4.0 * ffn * hidden},
        {"swiglu", [&] { b.SwiGlu(gate->data(), up->data(), batch, ffn, act->data()); }, 0},
        {"down_proj", [&] { b.MatMul(act->data(), batch, *w[8], proj->data()); }, 2.0 * hidden * ffn},
    };
    for (const Op& op : ops) {
      const double t = TimeIt(b.stream(), 3, 20, op.fn);
      Report(std::string("  405B layer op, batch 1: ") + op.name,
             op.bytes > 0 ? Fmt("%.1f us, %.0f GB/s", t * 1e6, op.bytes / t / 1e9) : Fmt("%.1f us", t * 1e6),
             op.bytes > 0 ? Fmt("%.0f%% of copy bw", 100.0 * op.bytes / t / copy_bw) : "-");
    }
    CHECK_OK(b.Synchronize());
  }
  const double t_eager = TimeIt(b.stream(), 3, 20, layer);
  CHECK_OK(b.Synchronize());
  // The same step captured once in a CUDA graph and replayed (no launch gaps).
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(b.stream(), cudaStreamCaptureModeThreadLocal));
  layer();
  CHECK_CUDA(cudaStreamEndCapture(b.stream(), &graph));
  CHECK_OK(b.Synchronize());
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const double t = TimeIt(b.stream(), 3, 20, [&] { CHECK_CUDA(cudaGraphLaunch(exec, b.stream())); });
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  const double kv_bytes = static_cast<double>(batch) * context * kvh * d * 2 * 2;
  const double floor = (weight_bytes + kv_bytes) / copy_bw;
  const double flops = 2.0 * (weight_bytes / 2) * batch + 4.0 * batch * context * qh * d;
  Report(Fmt("405B layer, TP rank 0 of 8, batch %.0f, context %.0f, eager", batch, context),
         Fmt("%.1f us, %.1f TFLOP/s", t_eager * 1e6, flops / t_eager / 1e12),
         Fmt("floor %.1f us: %.2fx of floor", floor * 1e6, t_eager / floor));
  Report(Fmt("405B layer, TP rank 0 of 8, batch %.0f, context %.0f, CUDA graph", batch, context),
         Fmt("%.1f us, %.1f TFLOP/s", t * 1e6, flops / t / 1e12),
         Fmt("floor %.1f us: %.2fx of floor", floor * 1e6, t / floor));
}

// The decode GEMV against cuBLASLt (with its bf16 cast) on the 405B slice shapes.
void GemvVsCublas(cudaStream_t s, double copy_bw) {
  auto gemm = LtGemm::Create();
  CHECK_OK(gemm.status());
  const int64_t shapes[][2] = {{2048, 16384}, {128, 16384}, {16384, 2048}, {6656, 16384}, {16384, 6656}};
  for (int64_t rows : {1, 8}) {
    for (const auto& sh : shapes) {
      const int64_t n = sh[0], k = sh[1];
      __nv_bfloat16 *w, *xb;
      float *x, *y;
      CHECK_CUDA(cudaMalloc(&w, n * k * 2));
      CHECK_CUDA(cudaMalloc(&x, rows * k * 4));
      CHECK_CUDA(cudaMalloc(&xb, rows * k * 2));
      CHECK_CUDA(cudaMalloc(&y, rows * n * 4));
      CHECK_CUDA(LaunchFillRandom(w, n * k, 11, 0.05f, s));
      CHECK_CUDA(LaunchFillRandom(x, rows * k, 12, 1.0f, s));
      const double tg = TimeIt(s, 3, 20, [&] { CHECK_CUDA(LaunchGemv(x, rows, w, n, k, y, s)); });
      const double tc = TimeIt(s, 3, 20, [&] {
        CHECK_CUDA(LaunchCastToBf16(x, rows * k, xb, s));
        CHECK_OK((*gemm)->MatMul(xb, rows, w, n, k, y, s));
      });
      const double bytes = 2.0 * n * k;
      Report(Fmt("  GEMV vs cuBLASLt, rows %.0f, %.0f x %.0f", rows, n, k),
             Fmt("%.1f us vs %.1f us", tg * 1e6, tc * 1e6),
             Fmt("%.0f%% vs %.0f%% of copy bw", 100.0 * bytes / tg / copy_bw, 100.0 * bytes / tc / copy_bw));
      cudaFree(w);
      cudaFree(x);
      cudaFree(xb);
      cudaFree(y);
    }
  }
}

void Sampling(cudaStream_t s) {
  const int64_t rows = 64, vocab = 128256;
  float *logits, *scratch;
  int32_t* ids;
  SamplingParams* params;
  CHECK_CUDA(cudaMalloc(&logits, rows * vocab * 4));
  CHECK_CUDA(cudaMalloc(&scratch, rows * vocab * 4));
  CHECK_CUDA(cudaMalloc(&ids, rows * 4));
  CHECK_CUDA(cudaMalloc(&params, rows * sizeof(SamplingParams)));
  CHECK_CUDA(LaunchFillRandom(logits, rows * vocab, 8, 8.0f, s));
  std::vector<SamplingParams> host(rows);
  for (auto& p : host) {
    p.temperature = 0.8f;
    p.top_k = 50;
    p.top_p = 0.9f;
  }
  CHECK_CUDA(cudaMemcpy(params, host.data(), rows * sizeof(SamplingParams), cudaMemcpyHostToDevice));
  const double t = TimeIt(s, 3, 20, [&] { CHECK_CUDA(LaunchSample(logits, rows, vocab, params, scratch, ids, s)); });
  Report("sampling 64 rows x 128256 vocab, T 0.8, top-k 50, top-p 0.9", Fmt("%.1f us", t * 1e6), "-");
  cudaFree(logits);
  cudaFree(scratch);
  cudaFree(ids);
  cudaFree(params);
}

int Main(int argc, char** argv) {
  bool quick = false, decode_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--decode-only") == 0) {
      decode_only = true;
    } else {
      std::fprintf(stderr, "usage: cuda_bench [--quick] [--decode-only]\n");
      return 2;
    }
  }
  absl::Status gpu = CudaDeviceAvailable();
  if (!gpu.ok()) {
    std::printf("cuda_bench: skipped: %s\n", std::string(gpu.message()).c_str());
    return 0;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, %.0f GiB\n", prop.name, prop.multiProcessorCount,
              prop.totalGlobalMem / double(1 << 30));
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreate(&s));
  const double copy_bw = CopyBandwidth(s, quick);
  const double gemm = decode_only ? 0 : GemmCeiling(s, quick);
  const int sms = prop.multiProcessorCount;
  DecodeAttention(s, sms, copy_bw, 32, 8192, 16, 1);
  if (decode_only) return 0;
  DecodeAttention(s, sms, copy_bw, 1, 131072, 16, 1);
  DecodeAttention(s, sms, copy_bw, 32, 8192, 16, 1, 128, 2);
  DecodeAttention(s, sms, copy_bw, 1, 8192, 16, 1);
  DecodeAttention(s, sms, copy_bw, 64, 4096, 8, 1);
  DecodeAttention(s, sms, copy_bw, 16, 8192, 32, 8);
  PrefillAttention(s, sms, gemm, 8192, 16, 1);
  GemvVsCublas(s, copy_bw);
  LayerSlice(copy_bw, 1, 8192);
  LayerSlice(copy_bw, 64, 2048);
  Sampling(s);
  cudaStreamDestroy(s);
  return 0;
}

}  // namespace
}  // namespace strata::kernels::cuda

int main(int argc, char** argv) { return strata::kernels::cuda::Main(argc, argv); }
