#include "tools/flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace strata::tools {
namespace {

absl::StatusOr<int64_t> ParseInRange(const std::string& name, absl::string_view text, int64_t min,
                                     int64_t max) {
  int64_t v;
  if (!absl::SimpleAtoi(text, &v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": \"", text, "\" is not an integer"));
  }
  if (v < min || v > max) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", v, " is outside [", min, ", ", max, "]"));
  }
  return v;
}

}  // namespace

absl::StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args,
                                   const std::set<std::string>& known,
                                   const std::set<std::string>& booleans) {
  Flags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", a, "\""));
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (known.count(name) == 0) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (booleans.count(name)) {
      if (has_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      flags.values_[name] = "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = args[++i];
    }
    flags.values_[name] = value;
  }
  return flags;
}

std::string Flags::GetString(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<std::string> Flags::GetChoice(const std::string& name, const std::string& fallback,
                                             const std::vector<std::string>& choices) const {
  const std::string value = GetString(name, fallback);
  for (const std::string& c : choices) {
    if (value == c) return value;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--", name, ": \"", value, "\" is not one of: ", absl::StrJoin(choices, ", ")));
}

absl::StatusOr<int64_t> Flags::GetInt(const std::string& name, int64_t fallback, int64_t min,
                                      int64_t max) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  return ParseInRange(name, it->second, min, max);
}

absl::StatusOr<std::vector<int64_t>> Flags::GetIntList(const std::string& name, int64_t min,
                                                       int64_t max) const {
  std::vector<int64_t> out;
  auto it = values_.find(name);
  if (it == values_.end()) return out;
  for (absl::string_view part : absl::StrSplit(it->second, ',')) {
    absl::StatusOr<int64_t> v = ParseInRange(name, part, min, max);
    if (!v.ok()) return v.status();
    out.push_back(*v);
  }
  return out;
}

}  // namespace strata::tools
