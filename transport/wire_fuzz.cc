// libFuzzer target for the data plane's receive path: any bytes, split into
// an AM header and data as a receiver sees them, must be refused or decode
// into a plan or result that re-encodes and decodes again; never a crash,
// hang or out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "transport/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strata::transport;
  if (size < 1) return 0;
  const size_t header_length = data[0] % 2 == 0 ? sizeof(WireHeader) : data[0] % 64;  // mostly well-sized
  if (size < 1 + header_length) return 0;
  const uint8_t* header = data + 1;
  const uint8_t* body = header + header_length;
  const size_t body_size = size - 1 - header_length;
  if (!ValidateHeader(header, header_length, body_size).ok()) return 0;
  WireHeader h;
  std::memcpy(&h, header, sizeof(h));
  if (h.plan_bytes > 0) {
    auto plan = DecodePlan(body, h.plan_bytes);
    if (plan.ok()) {
      const std::string again = EncodePlan(*plan);
      if (!DecodePlan(reinterpret_cast<const uint8_t*>(again.data()), again.size()).ok()) __builtin_trap();
    }
  }
  if (h.type == static_cast<uint16_t>(MessageType::kStepResult)) {
    auto result = DecodeResult(body + h.plan_bytes, h.payload_bytes);
    if (result.ok()) {
      const std::string again = EncodeResult(*result);
      if (!DecodeResult(reinterpret_cast<const uint8_t*>(again.data()), again.size()).ok()) __builtin_trap();
    }
  }
  return 0;
}
