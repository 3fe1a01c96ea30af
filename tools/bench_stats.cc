#include "tools/bench_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strata::tools {

double Quantile(std::vector<double> values, double p) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 1.0) * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

nlohmann::json Distribution(const std::vector<double>& values) {
  if (values.empty()) {
    return {{"mean", nullptr}, {"p50", nullptr}, {"p90", nullptr}, {"p95", nullptr}, {"p99", nullptr}};
  }
  double sum = 0;
  for (double v : values) sum += v;
  return {{"mean", sum / static_cast<double>(values.size())},
          {"p50", Quantile(values, 0.5)},
          {"p90", Quantile(values, 0.9)},
          {"p95", Quantile(values, 0.95)},
          {"p99", Quantile(values, 0.99)}};
}

std::string StatusCodeName(int code) {
  // absl and gRPC share the numbering (base/grpc_status.h).
  if (code < 0 || code > 16) return absl::StrCat("CODE_", code);
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

nlohmann::json Summarize(const std::vector<RequestSample>& samples, double seconds) {
  std::map<std::string, int64_t> codes;
  std::vector<double> ttft, gaps, tpot, latency;
  int64_t output_tokens = 0, prompt_tokens = 0, completed = 0;
  for (const RequestSample& s : samples) {
    codes[StatusCodeName(s.code)]++;
    if (s.ttft >= 0) ttft.push_back(s.ttft);
    gaps.insert(gaps.end(), s.gaps.begin(), s.gaps.end());
    output_tokens += s.output_tokens;
    if (s.code != 0) continue;
    ++completed;
    prompt_tokens += s.prompt_tokens;
    latency.push_back(s.latency);
    if (s.output_tokens > 1 && s.ttft >= 0) tpot.push_back((s.latency - s.ttft) / static_cast<double>(s.output_tokens - 1));
  }
  const double per_s = 1 / std::max(seconds, 1e-9);
  return {{"requests", samples.size()},
          {"completed", completed},
          {"codes", codes},
          {"seconds", seconds},
          {"request_throughput", static_cast<double>(completed) * per_s},
          {"prompt_tokens", prompt_tokens},
          {"output_tokens", output_tokens},
          {"output_tokens_per_s", static_cast<double>(output_tokens) * per_s},
          {"ttft_s", Distribution(ttft)},
          {"inter_token_s", Distribution(gaps)},
          {"tpot_s", Distribution(tpot)},
          {"latency_s", Distribution(latency)}};
}

std::string FormatSummary(const nlohmann::json& s) {
  std::string out;
  auto line = [&](const std::string& name, const std::string& value) {
    absl::StrAppendFormat(&out, "%-34s %s\n", name, value);
  };
  std::string codes;
  for (const auto& [name, n] : s["codes"].items()) absl::StrAppend(&codes, codes.empty() ? "" : ", ", name, " ", n.dump());
  line("requests", absl::StrCat(s["requests"].get<int64_t>(), " (", codes.empty() ? "none" : codes, ")"));
  line("duration (s)", absl::StrFormat("%.2f", s["seconds"].get<double>()));
  line("request throughput (req/s)", absl::StrFormat("%.2f", s["request_throughput"].get<double>()));
  line("prompt tokens", absl::StrCat(s["prompt_tokens"].get<int64_t>()));
  line("output tokens", absl::StrCat(s["output_tokens"].get<int64_t>()));
  line("output token throughput (tok/s)", absl::StrFormat("%.1f", s["output_tokens_per_s"].get<double>()));
  absl::StrAppendFormat(&out, "%-34s %10s %10s %10s %10s %10s\n", "latency (ms)", "mean", "p50", "p90", "p95", "p99");
  const std::pair<const char*, const char*> rows[] = {{"time to first token", "ttft_s"},
                                                      {"inter-token", "inter_token_s"},
                                                      {"time per output token", "tpot_s"},
                                                      {"end to end", "latency_s"}};
  for (const auto& [name, key] : rows) {
    absl::StrAppendFormat(&out, "  %-32s", name);
    for (const char* q : {"mean", "p50", "p90", "p95", "p99"}) {
      const nlohmann::json& v = s[key][q];
      absl::StrAppend(&out, v.is_number() ? absl::StrFormat(" %10.2f", v.get<double>() * 1000) : absl::StrFormat(" %10s", "-"));
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace strata::tools
