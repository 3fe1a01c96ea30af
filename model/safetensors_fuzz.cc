// libFuzzer target for the safetensors header parser: any bytes must give
// either a header or an error, never a crash, hang or out-of-bounds read.
#include <cstddef>
#include <cstdint>

#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto header = strata::model::ParseSafetensors(bytes, "fuzz");
  if (header.ok()) {
    // A valid header's ranges lie inside the file.
    for (const auto& t : header->tensors) {
      if (8 + header->header_bytes + t.end > size) __builtin_trap();
    }
  }
  return 0;
}
