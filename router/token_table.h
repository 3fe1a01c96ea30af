// The bearer tokens the public API accepts, read from a JSON file:
//
//   {"tokens": [
//     {"name": "search-frontend", "token": "…at least 16 characters…",
//      "models": ["llama-3.1-8b"], "requests_per_second": 20,
//      "max_concurrent": 8, "max_priority": 0},
//     {"name": "batch-eval", "token_sha256": "<64 hex digits>", "models": ["*"]}
//   ]}
//
// `token` or `token_sha256` (the file then holds no secret: only the
// token's SHA-256); `models`: the model names it may use ("*": any);
// limits are optional (0 or absent: none), `max_priority` defaults to 0
// (a caller may not jump the queue unless its token says so). Names and
// tokens are unique. Every field is checked; an error names the entry and
// the field.
#ifndef STRATA_ROUTER_TOKEN_TABLE_H_
#define STRATA_ROUTER_TOKEN_TABLE_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::router {

struct TokenRule {
  std::string name;
  std::vector<std::string> models;  // "*": any
  double requests_per_second = 0;   // 0: no limit
  int64_t max_concurrent = 0;       // 0: no limit
  int32_t max_priority = 0;

  bool MayUse(const std::string& model) const;
};

class TokenTable {
 public:
  static absl::StatusOr<TokenTable> Parse(std::string_view json);
  static absl::StatusOr<TokenTable> Load(const std::string& path);

  // The rule of `token`, or null.
  const TokenRule* Find(std::string_view token) const;
  size_t size() const { return by_digest_.size(); }

 private:
  std::map<std::string, TokenRule> by_digest_;  // hex SHA-256 of the token -> rule
};

// Lower-case hex SHA-256 of `text`.
std::string Sha256Hex(std::string_view text);

}  // namespace strata::router

#endif  // STRATA_ROUTER_TOKEN_TABLE_H_
