// The cost of the data plane's HMAC-SHA256 (transport/message_auth.h): one
// sign plus one verify of a message with a plan of each size, as a stage
// pays it per step and hop. Prints one JSON object per size.
//   bazel run -c opt //transport:message_auth_bench
#include <chrono>
#include <cstdio>
#include <vector>

#include "transport/message_auth.h"
#include "transport/transport.h"

int main() {
  using namespace strata::transport;
  const DataKey key = NewDataKey();
  for (size_t plan_bytes : {256, 1024, 4096, 65536}) {
    std::vector<uint8_t> plan(plan_bytes, 0x11);
    WireHeader h;
    h.type = static_cast<uint16_t>(MessageType::kActivations);
    h.plan_bytes = static_cast<uint32_t>(plan_bytes);
    const int n = plan_bytes > 4096 ? 10000 : 100000;
    int ok = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      h.step_id = static_cast<uint64_t>(i);
      SignMessage(key, &h, {{plan.data(), plan.size()}});
      ok += VerifyMessage(key, h, plan.data(), plan.size());
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / n;
    std::printf("{\"plan_bytes\": %zu, \"sign_and_verify_us\": %.2f, \"verified\": %s}\n", plan_bytes, us,
                ok == n ? "true" : "false");
  }
  return 0;
}
