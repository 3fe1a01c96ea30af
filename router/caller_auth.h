// Who may call the public API: the bearer token a caller presents (gRPC
// metadata `authorization: Bearer <token>`, or the HTTP header), looked up
// in the --auth-tokens file (router/token_table.h), and the token's limits
// (requests per second as a token bucket, concurrent requests, the highest
// priority it may ask for). Codes: UNAUTHENTICATED (no token, or an unknown
// one), PERMISSION_DENIED (a model or priority the token does not allow),
// RESOURCE_EXHAUSTED naming the limit. Reload() swaps in a new file at
// once; requests already admitted keep their slot, and a token whose name
// stays keeps its counts. Without a file every call passes. Thread-safe.
#ifndef STRATA_ROUTER_CALLER_AUTH_H_
#define STRATA_ROUTER_CALLER_AUTH_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "router/token_table.h"

namespace strata::router {

// An admitted request's hold on its token's concurrency; released when
// the pass is destroyed. Move-only; an empty pass (auth off) holds nothing.
class CallerPass {
 public:
  struct Usage;
  CallerPass() = default;
  CallerPass(std::shared_ptr<Usage> usage, std::string name);
  CallerPass(CallerPass&& other) noexcept = default;
  CallerPass& operator=(CallerPass&& other) noexcept;
  ~CallerPass();
  const std::string& name() const { return name_; }  // the token's name, empty when auth is off

 private:
  void Release();
  std::shared_ptr<Usage> usage_;
  std::string name_;
};

class CallerAuth {
 public:
  using Clock = std::chrono::steady_clock;
  CallerAuth() = default;  // off: every call passes
  // Reads `path`; INVALID_ARGUMENT naming the entry and field when it is bad.
  static absl::StatusOr<std::unique_ptr<CallerAuth>> Load(const std::string& path);

  bool enabled() const { return !path_.empty(); }
  // Reads the file again; on an error the current table stays.
  absl::Status Reload();

  // A request on `model` at `priority`; `authorization` is the header's
  // value ("Bearer <token>", empty when absent).
  absl::StatusOr<CallerPass> Admit(std::string_view authorization, const std::string& model, int32_t priority);
  // The token alone (calls without a model: ListModels, Tokenize, health).
  absl::Status Authenticate(std::string_view authorization) const;

 private:
  absl::StatusOr<const TokenRule*> Find(std::string_view authorization) const;  // mu_ held

  std::string path_;
  mutable std::mutex mu_;
  std::shared_ptr<const TokenTable> table_;
  std::map<std::string, std::shared_ptr<CallerPass::Usage>> usage_;  // by token name
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_CALLER_AUTH_H_
