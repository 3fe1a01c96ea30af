#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/sampling.h"
#include "kernels/reference/ops.h"
#include "kernels/reference/reference_backend.h"
#include "model/dtype.h"
#include "base/status_macros.h"

namespace strata::kernels::cuda {
namespace {

class DeviceWeight : public Weight {
 public:
  DeviceWeight(int64_t rows, int64_t cols, __nv_bfloat16* data) : Weight(rows, cols), data_(data) {}
  ~DeviceWeight() override { cudaFree(data_); }
  const __nv_bfloat16* data() const { return data_; }

 private:
  __nv_bfloat16* data_;
};

class DeviceBuffer : public Buffer {
 public:
  DeviceBuffer(float* data, int64_t size) : data_(data), size_(size) {}
  ~DeviceBuffer() override { cudaFree(data_); }
  float* data() override { return data_; }
  int64_t size() const override { return size_; }

 private:
  float* data_;
  int64_t size_;
};

// K and V of every layer in one allocation: [layers][2][FloatsPerLayer] bf16.
class DeviceKvCache : public KvCache {
 public:
  DeviceKvCache(const KvCacheShape& shape, __nv_bfloat16* data) : KvCache(shape), data_(data) {}
  ~DeviceKvCache() override { cudaFree(data_); }
  __nv_bfloat16* k(int64_t layer) const { return data_ + (2 * layer) * shape().FloatsPerLayer(); }
  __nv_bfloat16* v(int64_t layer) const { return data_ + (2 * layer + 1) * shape().FloatsPerLayer(); }

 private:
  __nv_bfloat16* data_;
};

// Attention thread blocks to aim for per SM when splitting keys (two waves
// of the decode kernel, which keeps two resident per SM; docs/benchmarks.md).
constexpr int kAttentionBlocksPerSm = 4;
// Rows up to which the GEMV beats cuBLASLt (measured on H200, docs/benchmarks.md).
constexpr int64_t kGemvRows = 2;

const __nv_bfloat16* W(const Weight& w) { return static_cast<const DeviceWeight&>(w).data(); }

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int device) {
  STRATA_RETURN_IF_ERROR(CudaDeviceAvailable());
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_ = device;
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaSetDevice(device)));
  STRATA_RETURN_IF_ERROR(
      CUDA_STATUS(cudaDeviceGetAttribute(&b->sm_count_, cudaDevAttrMultiProcessorCount, device)));
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking)));
  STRATA_ASSIGN_OR_RETURN(b->gemm_, LtGemm::Create());
  return b;
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  gemm_.reset();
  for (void* p : {step_buf_, plan_ws_, bf16_x_,
                  ids_, static_cast<void*>(inv_freq_), sample_scratch_}) {
    if (p) cudaFree(p);
  }
  if (stream_) cudaStreamDestroy(stream_);
}

bool CudaBackend::Ok(const absl::Status& s) {
  if (!s.ok() && error_.ok()) error_ = s;
  return error_.ok();
}

bool CudaBackend::Ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess && error_.ok()) {
    error_ = absl::InternalError(absl::StrCat("CUDA ", what, " failed: ", cudaGetErrorName(err), ": ",
                                              cudaGetErrorString(err)));
  }
  return error_.ok();
}

absl::Status CudaBackend::Reserve(void** ptr, size_t* cap, size_t bytes) {
  if (bytes <= *cap) return absl::OkStatus();
  // The old buffer may still be read by queued work.
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaStreamSynchronize(stream_)));
  const size_t grown = std::max(bytes, *cap * 2);
  if (*ptr) cudaFree(*ptr);
  *ptr = nullptr;
  *cap = 0;
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMalloc(ptr, grown)));
  *cap = grown;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Weight>> CudaBackend::LoadWeight(const model::TensorView& tensor,
                                                                const WeightSlice& slice) {
  STRATA_ASSIGN_OR_RETURN(WeightSlice s, ResolveSlice(tensor, slice));
  const int64_t cols = tensor.shape.back();
  const int64_t rows_out = s.row_end - s.row_begin, cols_out = s.col_end - s.col_begin;
  const int64_t esize = model::DTypeSize(tensor.dtype);
  std::vector<uint16_t> host(rows_out * cols_out);
  std::vector<float> row_f32(tensor.dtype == model::DType::kBF16 ? 0 : cols_out);
  for (int64_t r = s.row_begin; r < s.row_end; ++r) {
    const uint8_t* src = tensor.data + (r * cols + s.col_begin) * esize;
    uint16_t* dst = host.data() + (r - s.row_begin) * cols_out;
    if (tensor.dtype == model::DType::kBF16) {
      std::memcpy(dst, src, cols_out * 2);
    } else {
      model::ConvertToFloat(tensor.dtype, src, cols_out, row_f32.data());
      for (int64_t c = 0; c < cols_out; ++c) dst[c] = model::FloatToBF16(row_f32[c]);
    }
  }
  __nv_bfloat16* dev = nullptr;
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMalloc(&dev, host.size() * 2)));
  absl::Status copied = CUDA_STATUS(cudaMemcpy(dev, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
  if (!copied.ok()) {
    cudaFree(dev);
    return copied;
  }
  return std::unique_ptr<Weight>(new DeviceWeight(rows_out, cols_out, dev));
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::AllocateBuffer(int64_t floats) {
  if (floats < 0) return absl::InvalidArgumentError("negative buffer size");
  float* dev = nullptr;
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMalloc(&dev, std::max<int64_t>(floats, 1) * sizeof(float))));
  return std::unique_ptr<Buffer>(new DeviceBuffer(dev, floats));
}

absl::StatusOr<std::unique_ptr<KvCache>> CudaBackend::AllocateKvCache(const KvCacheShape& shape) {
  STRATA_RETURN_IF_ERROR(ValidateKvCacheShape(shape));
  if (shape.head_dim != 64 && shape.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("the CUDA attention kernel supports head_dim 64 and 128, not ", shape.head_dim));
  }
  if (shape.num_blocks * shape.block_size > (1ll << 31) - 1) {
    return absl::InvalidArgumentError("KV cache has more than 2^31 token slots");
  }
  const size_t bytes = 2 * 2 * static_cast<size_t>(shape.num_layers) * shape.FloatsPerLayer();
  size_t free_bytes = 0, total_bytes = 0;
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMemGetInfo(&free_bytes, &total_bytes)));
  if (bytes > free_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache needs ", bytes >> 20, " MiB but the GPU has ",
                                                     free_bytes >> 20, " MiB free"));
  }
  __nv_bfloat16* dev = nullptr;
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMalloc(&dev, bytes)));
  return std::unique_ptr<KvCache>(new DeviceKvCache(shape, dev));
}

absl::Status CudaBackend::CopyToHost(const float* src, int64_t floats, float* host_dst) {
  STRATA_RETURN_IF_ERROR(error_);
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(
      cudaMemcpyAsync(host_dst, src, floats * sizeof(float), cudaMemcpyDeviceToHost, stream_)));
  return CUDA_STATUS(cudaStreamSynchronize(stream_));
}

absl::Status CudaBackend::CopyFromHost(const float* host_src, int64_t floats, float* dst) {
  STRATA_RETURN_IF_ERROR(error_);
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(
      cudaMemcpyAsync(dst, host_src, floats * sizeof(float), cudaMemcpyHostToDevice, stream_)));
  // The host buffer belongs to the caller: finish before returning.
  return CUDA_STATUS(cudaStreamSynchronize(stream_));
}

absl::Status CudaBackend::BeginStep(const StepLayout& layout) {
  STRATA_RETURN_IF_ERROR(error_);
  // The previous step's uploads may still be in flight from host staging.
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaStreamSynchronize(stream_)));
  layout_ = &layout;
  step_rows_ = layout.NumRows();
  host_positions_ = reference::RowPositions(layout);
  const size_t rows = std::max<size_t>(1, step_rows_);
  STRATA_RETURN_IF_ERROR(Reserve(&step_buf_, &step_cap_, 2 * rows * sizeof(int64_t)));
  positions_ = static_cast<int64_t*>(step_buf_);
  slots_ = positions_ + rows;
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMemcpyAsync(positions_, host_positions_.data(),
                                                     step_rows_ * sizeof(int64_t),
                                                     cudaMemcpyHostToDevice, stream_)));
  plan_ready_ = false;
  slots_block_size_ = 0;
  return absl::OkStatus();
}

void CudaBackend::Embed(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  if (!error_.ok()) return;
  if (!Ok(Reserve(&ids_, &ids_cap_, std::max<int64_t>(n, 1) * sizeof(int64_t)))) return;
  // Staged in memory this backend owns until the next BeginStep (which
  // synchronizes), so the copy needs no stream sync mid-step.
  host_token_ids_.assign(ids, ids + n);
  if (!Ok(cudaMemcpyAsync(ids_, host_token_ids_.data(), n * sizeof(int32_t), cudaMemcpyHostToDevice, stream_),
          "ids upload")) {
    return;
  }
  Ok(LaunchEmbed(W(table), table.rows(), table.cols(), static_cast<const int32_t*>(ids_), n, out, stream_),
     "Embed");
}

void CudaBackend::RmsNorm(const float* x, const Weight& w, float eps, int64_t rows, float* out) {
  if (!error_.ok()) return;
  Ok(LaunchRmsNorm<float>(x, nullptr, nullptr, W(w), eps, rows, w.cols(), out, stream_), "RmsNorm");
}

void CudaBackend::MatMul(const float* x, int64_t rows, const Weight& w, float* y) {
  if (!error_.ok() || rows == 0) return;
  if (rows <= kGemvRows && GemvSupports(rows, w.cols())) {  // decode: stream the weight once, no cast
    Ok(LaunchGemv(x, rows, W(w), w.rows(), w.cols(), y, stream_), "Gemv");
    return;
  }
  const int64_t n = rows * w.cols();
  if (!Ok(Reserve(&bf16_x_, &bf16_x_cap_, n * sizeof(__nv_bfloat16)))) return;
  auto* xb = static_cast<__nv_bfloat16*>(bf16_x_);
  if (!Ok(LaunchCastToBf16(x, n, xb, stream_), "cast to bf16")) return;
  Ok(gemm_->MatMul(xb, rows, W(w), w.rows(), w.cols(), y, stream_));
}

void CudaBackend::MatMulShared(const float* x, int64_t rows, const std::vector<const Weight*>& ws,
                               const std::vector<float*>& ys) {
  if (!error_.ok() || rows == 0 || ws.empty()) return;
  bool one_launch = rows <= kGemvRows && ws.size() <= static_cast<size_t>(kGemvMaxTargets) &&
                    GemvSupports(rows, ws[0]->cols());
  for (const Weight* w : ws) one_launch = one_launch && w->cols() == ws[0]->cols();
  if (!one_launch) {
    Backend::MatMulShared(x, rows, ws, ys);
    return;
  }
  GemvTargets t;
  t.count = static_cast<int>(ws.size());
  for (size_t i = 0; i < ws.size(); ++i) {
    t.w[i] = W(*ws[i]);
    t.n[i] = ws[i]->rows();
    t.y[i] = ys[i];
  }
  Ok(LaunchGemvMulti(x, rows, t, ws[0]->cols(), stream_), "GemvMulti");
}

void CudaBackend::Rope(float* x, int64_t heads, int64_t head_dim, const std::vector<float>& inv_freq) {
  if (!error_.ok()) return;
  if (inv_freq != inv_freq_host_) {
    if (!Ok(cudaStreamSynchronize(stream_), "Rope sync")) return;
    if (inv_freq_) cudaFree(inv_freq_);
    inv_freq_ = nullptr;
    inv_freq_host_.clear();
    if (!Ok(cudaMalloc(&inv_freq_, std::max<size_t>(1, inv_freq.size()) * sizeof(float)), "Rope alloc")) return;
    if (!Ok(cudaMemcpy(inv_freq_, inv_freq.data(), inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice),
            "Rope upload")) {
      return;
    }
    inv_freq_host_ = inv_freq;
  }
  if (static_cast<int64_t>(inv_freq.size()) * 2 != head_dim) {
    Ok(absl::InvalidArgumentError(absl::StrCat("RoPE has ", inv_freq.size(), " frequencies for head_dim ", head_dim)));
    return;
  }
  Ok(LaunchRope(x, step_rows_, heads, head_dim, positions_, inv_freq_, stream_), "Rope");
}

void CudaBackend::WriteKv(KvCache& cache, int64_t layer, const float* k, const float* v) {
  if (!error_.ok()) return;
  const KvCacheShape& s = cache.shape();
  if (slots_block_size_ != s.block_size) {
    host_slots_.clear();
    for (const SequenceChunk& seq : layout_->sequences) {
      for (int32_t t = 0; t < seq.num_tokens; ++t) {
        const int64_t index = seq.cached_tokens + t;
        host_slots_.push_back(static_cast<int64_t>(seq.block_table[index / s.block_size]) * s.block_size +
                              index % s.block_size);
      }
    }
    if (!Ok(cudaMemcpyAsync(slots_, host_slots_.data(), host_slots_.size() * sizeof(int64_t),
                            cudaMemcpyHostToDevice, stream_),
            "slots upload")) {
      return;
    }
    slots_block_size_ = s.block_size;
  }
  auto& c = static_cast<DeviceKvCache&>(cache);
  Ok(LaunchWriteKv(k, v, step_rows_, s.num_kv_heads * s.head_dim, slots_, c.k(layer), c.v(layer), stream_),
     "WriteKv");
}

void CudaBackend::Attention(const KvCache& cache, int64_t layer, const float* q, int64_t q_heads,
                            float* out) {
  if (!error_.ok()) return;
  const KvCacheShape& s = cache.shape();
  AttentionDims dims;
  dims.q_heads = static_cast<int32_t>(q_heads);
  dims.kv_heads = static_cast<int32_t>(s.num_kv_heads);
  dims.head_dim = static_cast<int32_t>(s.head_dim);
  dims.block_size = static_cast<int32_t>(s.block_size);
  if (!plan_ready_ || plan_.dims.q_heads != dims.q_heads || plan_.dims.kv_heads != dims.kv_heads ||
      plan_.dims.head_dim != dims.head_dim || plan_.dims.block_size != dims.block_size) {
    if (q_heads % s.num_kv_heads != 0) {
      Ok(absl::InvalidArgumentError(absl::StrCat(q_heads, " query heads do not divide into ",
                                                 s.num_kv_heads, " KV heads")));
      return;
    }
    // The previous plan's staging may still feed an upload in flight.
    if (!Ok(cudaStreamSynchronize(stream_), "plan sync")) return;
    plan_ = MakeAttentionPlan(*layout_, dims, kAttentionBlocksPerSm * sm_count_);
    if (!Ok(Reserve(&plan_ws_, &plan_ws_cap_, plan_.WorkspaceBytes()))) return;
    if (!Ok(UploadAttentionPlan(plan_, plan_ws_, stream_), "attention plan upload")) return;
    plan_ready_ = true;
  }
  const auto& c = static_cast<const DeviceKvCache&>(cache);
  Ok(LaunchAttention(plan_, plan_ws_, q, c.k(layer), c.v(layer), out, stream_), "Attention");
}

void CudaBackend::SwiGlu(const float* gate, const float* up, int64_t rows, int64_t width, float* out) {
  if (!error_.ok()) return;
  Ok(LaunchSwiGlu(gate, up, rows * width, out, stream_), "SwiGlu");
}

void CudaBackend::Add(float* x, const float* y, int64_t n) {
  if (!error_.ok()) return;
  Ok(LaunchAdd(x, y, n, stream_), "Add");
}

void CudaBackend::GatherRows(const float* x, int64_t cols, const int64_t* row_ids, int64_t n,
                             float* out) {
  if (!error_.ok()) return;
  if (!Ok(Reserve(&ids_, &ids_cap_, std::max<int64_t>(n, 1) * sizeof(int64_t)))) return;
  host_row_ids_.assign(row_ids, row_ids + n);  // staged as in Embed
  if (!Ok(cudaMemcpyAsync(ids_, host_row_ids_.data(), n * sizeof(int64_t), cudaMemcpyHostToDevice, stream_),
          "row ids upload")) {
    return;
  }
  Ok(LaunchGatherRows(x, cols, static_cast<const int64_t*>(ids_), n, out, stream_), "GatherRows");
}

absl::Status CudaBackend::Synchronize() {
  Ok(cudaStreamSynchronize(stream_), "stream synchronize");
  absl::Status s = error_;
  error_ = absl::OkStatus();
  return s;
}

absl::Status CudaBackend::Sample(const float* logits, int64_t vocab, absl::Span<const SampleRequest> requests,
                                 absl::Span<SampleResult> results) {
  STRATA_RETURN_IF_ERROR(ValidateSampleRequests(vocab, requests, results));
  STRATA_RETURN_IF_ERROR(error_);
  const int64_t rows = static_cast<int64_t>(requests.size());
  if (rows == 0) return absl::OkStatus();
  // Rows that do not sample draw greedily (the cheap path); their ids are
  // not read.
  std::vector<SamplingParams> params(rows);
  bool any_sample = false;
  for (int64_t r = 0; r < rows; ++r) {
    if (requests[r].sample) params[r] = requests[r].params;
    any_sample = any_sample || requests[r].sample;
  }
  // One scratch allocation: params, requests, the sampler's [rows, vocab]
  // floats, the drawn ids, the results; each part 256-byte aligned.
  auto align = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  const size_t requests_off = align(rows * sizeof(SamplingParams));
  const size_t floats_off = requests_off + align(rows * sizeof(SampleRequest));
  const size_t ids_off = floats_off + align(any_sample ? rows * vocab * sizeof(float) : 0);
  const size_t results_off = ids_off + align(rows * sizeof(int32_t));
  STRATA_RETURN_IF_ERROR(Reserve(&sample_scratch_, &sample_scratch_cap_, results_off + rows * sizeof(SampleResult)));
  char* base = static_cast<char*>(sample_scratch_);
  auto* dparams = reinterpret_cast<SamplingParams*>(base);
  auto* drequests = reinterpret_cast<SampleRequest*>(base + requests_off);
  auto* dfloats = reinterpret_cast<float*>(base + floats_off);
  auto* dids = reinterpret_cast<int32_t*>(base + ids_off);
  auto* dresults = reinterpret_cast<SampleResult*>(base + results_off);
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMemcpyAsync(drequests, requests.data(), rows * sizeof(SampleRequest),
                                                     cudaMemcpyHostToDevice, stream_)));
  if (any_sample) {
    STRATA_RETURN_IF_ERROR(CUDA_STATUS(
        cudaMemcpyAsync(dparams, params.data(), rows * sizeof(SamplingParams), cudaMemcpyHostToDevice, stream_)));
    STRATA_RETURN_IF_ERROR(CUDA_STATUS(LaunchSample(logits, rows, vocab, dparams, dfloats, dids, stream_)));
  }
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(LaunchScore(logits, rows, vocab, drequests, dids, dresults, stream_)));
  STRATA_RETURN_IF_ERROR(CUDA_STATUS(cudaMemcpyAsync(results.data(), dresults, rows * sizeof(SampleResult),
                                                     cudaMemcpyDeviceToHost, stream_)));
  // The host staging above and `results` are the caller's or this frame's.
  return CUDA_STATUS(cudaStreamSynchronize(stream_));
}

}  // namespace strata::kernels::cuda
