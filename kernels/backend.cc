#include "kernels/backend.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace strata::kernels {

absl::Status ValidateSampleRequests(int64_t vocab, absl::Span<const SampleRequest> requests,
                                    absl::Span<const SampleResult> results) {
  if (vocab < 1) return absl::InvalidArgumentError(absl::StrCat("sample: vocab ", vocab, " is not positive"));
  if (results.size() != requests.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: ", results.size(), " results for ", requests.size(), " requests"));
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const SampleRequest& r = requests[i];
    auto bad = [&](const char* field, auto value, absl::string_view range) {
      return absl::InvalidArgumentError(absl::StrCat("sample row ", i, ": ", field, " ", value, " is outside ", range));
    };
    if (r.target < -1 || r.target >= vocab) return bad("target", r.target, absl::StrCat("[-1, ", vocab, ")"));
    if (!r.sample) continue;
    if (r.logprobs < -1 || r.logprobs > kMaxTopLogprobs) {
      return bad("logprobs", r.logprobs, absl::StrCat("[-1, ", kMaxTopLogprobs, "]"));
    }
    const SamplingParams& p = r.params;
    if (!std::isfinite(p.temperature) || p.temperature < 0.0f) return bad("temperature", p.temperature, "[0, inf)");
    if (p.top_k < 0) return bad("top_k", p.top_k, "[0, inf)");
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad("top_p", p.top_p, "(0, 1]");
  }
  return absl::OkStatus();
}

}  // namespace strata::kernels
