#include "tools/bench_workload.h"

#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace strata::tools {
namespace {

absl::Status LineError(const std::string& source, int line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ":", line, ": ", what));
}

// A length field: an integer in [1, kMaxWorkLength].
absl::StatusOr<int64_t> Length(const nlohmann::json& v, const std::string& key, const std::string& source, int line) {
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > kMaxWorkLength) {
    return LineError(source, line, absl::StrCat("\"", key, "\" must be an integer in [1, ", kMaxWorkLength, "], not ",
                                                v.dump()));
  }
  return v.get<int64_t>();
}

}  // namespace

absl::StatusOr<LengthDist> LengthDist::Uniform(int64_t min, int64_t max, const std::string& what) {
  if (min < 1 || min > max) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the range [", min, ", ", max, "] is empty or below 1"));
  }
  return LengthDist{min, max};
}

int64_t LengthDist::Sample(std::mt19937_64& rng) const {
  if (min == max) return min;
  return std::uniform_int_distribution<int64_t>(min, max)(rng);
}

absl::StatusOr<std::vector<WorkItem>> ParseJsonlWorkload(absl::string_view text, const std::string& source) {
  std::vector<WorkItem> items;
  int line = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line;
    const std::string s(absl::StripAsciiWhitespace(raw));
    if (s.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return LineError(source, line, "not a JSON object");
    if (!j.is_object()) return LineError(source, line, absl::StrCat("not a JSON object: ", s.substr(0, 80)));
    WorkItem w;
    int prompts = 0;
    bool has_output = false;
    for (const auto& [key, v] : j.items()) {
      if (key == "prompt_tokens") {
        auto n = Length(v, key, source, line);
        if (!n.ok()) return n.status();
        w.prompt_tokens = *n;
        ++prompts;
      } else if (key == "output_tokens") {
        auto n = Length(v, key, source, line);
        if (!n.ok()) return n.status();
        w.output_tokens = *n;
        has_output = true;
      } else if (key == "prompt") {
        if (!v.is_string() || v.get<std::string>().empty()) {
          return LineError(source, line, "\"prompt\" must be a non-empty string");
        }
        w.prompt_text = v.get<std::string>();
        w.has_text = true;
        ++prompts;
      } else if (key == "prompt_ids") {
        if (!v.is_array() || v.empty() || static_cast<int64_t>(v.size()) > kMaxWorkLength) {
          return LineError(source, line, absl::StrCat("\"prompt_ids\" must be a list of 1 to ", kMaxWorkLength, " ids"));
        }
        for (const nlohmann::json& id : v) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
              id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
            return LineError(source, line, absl::StrCat("\"prompt_ids\": ", id.dump(), " is not a token id"));
          }
          w.prompt_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
        }
        w.prompt_tokens = static_cast<int64_t>(w.prompt_ids.size());
        ++prompts;
      } else {
        return LineError(source, line,
                         absl::StrCat("unknown key \"", key, "\" (known: prompt_tokens, prompt, prompt_ids, output_tokens)"));
      }
    }
    if (prompts != 1) return LineError(source, line, "needs exactly one of \"prompt_tokens\", \"prompt\", \"prompt_ids\"");
    if (!has_output) return LineError(source, line, "needs \"output_tokens\"");
    items.push_back(std::move(w));
  }
  if (items.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": no requests (one JSON object per line)"));
  return items;
}

absl::StatusOr<double> ParseRequestRate(const std::string& text) {
  if (text == "inf" || text == "0") return std::numeric_limits<double>::infinity();
  double r = 0;
  if (!absl::SimpleAtod(text, &r) || !std::isfinite(r) || r <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--request-rate: \"", text, "\" is not a rate (requests per second > 0, or inf / 0: all at once)"));
  }
  return r;
}

Arrivals::Arrivals(double rate, uint64_t seed) : rate_(rate), rng_(seed) {}

double Arrivals::Next() {
  const double t = t_;
  if (std::isfinite(rate_)) t_ += std::exponential_distribution<double>(rate_)(rng_);
  return t;
}

}  // namespace strata::tools
