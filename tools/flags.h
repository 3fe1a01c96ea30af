// A small command-line parser for strata's subcommands: "--name value",
// "--name=value" and bare boolean "--name". Every value is checked; unknown
// flags and malformed numbers are errors that name the flag.
#ifndef STRATA_TOOLS_FLAGS_H_
#define STRATA_TOOLS_FLAGS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::tools {

class Flags {
 public:
  // `known`: flag names without dashes; `booleans`: those that take no value.
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args,
                                     const std::set<std::string>& known,
                                     const std::set<std::string>& booleans);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string GetString(const std::string& name, const std::string& fallback) const;
  // In [min, max]; absent gives `fallback`.
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback, int64_t min,
                                 int64_t max) const;
  // Comma-separated integers, each in [min, max].
  absl::StatusOr<std::vector<int64_t>> GetIntList(const std::string& name, int64_t min,
                                                  int64_t max) const;
  bool GetBool(const std::string& name) const { return Has(name); }
  // One of `choices`; absent gives `fallback`; anything else is an error
  // naming the flag and the choices.
  absl::StatusOr<std::string> GetChoice(const std::string& name, const std::string& fallback,
                                        const std::vector<std::string>& choices) const;

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace strata::tools

#endif  // STRATA_TOOLS_FLAGS_H_
