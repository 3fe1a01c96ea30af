#include "router/caller_auth.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace strata::router {

struct CallerPass::Usage {
  std::mutex mu;
  int64_t in_flight = 0;
  double bucket = -1;  // requests it may start now; < 0: not started
  CallerAuth::Clock::time_point refilled;
};

CallerPass::CallerPass(std::shared_ptr<Usage> usage, std::string name)
    : usage_(std::move(usage)), name_(std::move(name)) {}

CallerPass& CallerPass::operator=(CallerPass&& other) noexcept {
  if (this != &other) {
    Release();
    usage_ = std::move(other.usage_);
    name_ = std::move(other.name_);
  }
  return *this;
}

CallerPass::~CallerPass() { Release(); }

void CallerPass::Release() {
  if (!usage_) return;
  std::lock_guard<std::mutex> lock(usage_->mu);
  usage_->in_flight--;
  usage_.reset();
}

absl::StatusOr<std::unique_ptr<CallerAuth>> CallerAuth::Load(const std::string& path) {
  auto table = TokenTable::Load(path);
  if (!table.ok()) return table.status();
  auto auth = std::make_unique<CallerAuth>();
  auth->path_ = path;
  auth->table_ = std::make_shared<const TokenTable>(std::move(*table));
  return auth;
}

absl::Status CallerAuth::Reload() {
  if (!enabled()) return absl::OkStatus();
  auto table = TokenTable::Load(path_);
  if (!table.ok()) return table.status();
  std::lock_guard<std::mutex> lock(mu_);
  table_ = std::make_shared<const TokenTable>(std::move(*table));
  return absl::OkStatus();
}

absl::StatusOr<const TokenRule*> CallerAuth::Find(std::string_view authorization) const {
  absl::string_view v = absl::StripAsciiWhitespace(absl::string_view(authorization.data(), authorization.size()));
  if (v.empty()) {
    return absl::UnauthenticatedError("no bearer token: send the header 'authorization: Bearer <token>'");
  }
  if (!absl::StartsWithIgnoreCase(v, "bearer ")) {
    return absl::UnauthenticatedError("the authorization header must be 'Bearer <token>'");
  }
  v = absl::StripAsciiWhitespace(v.substr(7));
  const TokenRule* rule = table_->Find(std::string_view(v.data(), v.size()));
  if (rule == nullptr) return absl::UnauthenticatedError("the bearer token is not known");
  return rule;
}

absl::Status CallerAuth::Authenticate(std::string_view authorization) const {
  if (!enabled()) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  return Find(authorization).status();
}

absl::StatusOr<CallerPass> CallerAuth::Admit(std::string_view authorization, const std::string& model,
                                             int32_t priority) {
  if (!enabled()) return CallerPass();
  std::lock_guard<std::mutex> lock(mu_);
  auto found = Find(authorization);
  if (!found.ok()) return found.status();
  const TokenRule& r = **found;
  if (!r.MayUse(model)) {
    return absl::PermissionDeniedError(absl::StrCat("token \"", r.name, "\" may not use model \"", model, "\""));
  }
  if (priority > r.max_priority) {
    return absl::PermissionDeniedError(absl::StrCat("priority ", priority, " is above the highest token \"", r.name,
                                                    "\" may ask for (", r.max_priority, ")"));
  }
  auto& usage = usage_[r.name];
  if (!usage) usage = std::make_shared<CallerPass::Usage>();
  std::lock_guard<std::mutex> ulock(usage->mu);
  if (r.max_concurrent > 0 && usage->in_flight >= r.max_concurrent) {
    return absl::ResourceExhaustedError(absl::StrCat("token \"", r.name, "\" is at its limit of ", r.max_concurrent,
                                                     " concurrent requests (max_concurrent)"));
  }
  if (r.requests_per_second > 0) {
    const auto now = Clock::now();
    const double burst = std::max(1.0, r.requests_per_second);
    if (usage->bucket < 0) {
      usage->bucket = burst;
    } else {
      const double seconds = std::chrono::duration<double>(now - usage->refilled).count();
      usage->bucket = std::min(burst, usage->bucket + seconds * r.requests_per_second);
    }
    usage->refilled = now;
    if (usage->bucket < 1.0) {
      return absl::ResourceExhaustedError(absl::StrCat("token \"", r.name, "\" is over its limit of ",
                                                       r.requests_per_second,
                                                       " requests per second (requests_per_second)"));
    }
    usage->bucket -= 1.0;
  }
  usage->in_flight++;
  return CallerPass(usage, r.name);
}

}  // namespace strata::router
