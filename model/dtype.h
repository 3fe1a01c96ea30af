// Element types of checkpoint tensors and their conversions to float.
#ifndef STRATA_MODEL_DTYPE_H_
#define STRATA_MODEL_DTYPE_H_

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::model {

enum class DType { kF32, kBF16, kF16 };

// Bytes per element.
inline int64_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }

// Safetensors spelling: "F32", "BF16", "F16".
const char* DTypeName(DType t);

// Parses a safetensors dtype name. Known but unsupported names (F64, I64,
// F8_E4M3, ...) and unknown names are errors that say which.
absl::StatusOr<DType> ParseDType(absl::string_view name);

inline float BF16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t FloatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);

// Converts `count` elements at `src` (of type `t`, any alignment) to float.
void ConvertToFloat(DType t, const void* src, int64_t count, float* dst);

}  // namespace strata::model

#endif  // STRATA_MODEL_DTYPE_H_
