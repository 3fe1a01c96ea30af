#include "worker/abort_list.h"

namespace strata::worker {

bool AbortList::Drops(const transport::Message& m) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (up_to_ > 0 && m.header.step_id <= up_to_) return true;
  if (sequences_.empty()) return false;
  // Only when sequence aborts are pending is the plan decoded a second time.
  auto plan = transport::DecodePlan(m.plan(), m.header.plan_bytes);
  if (!plan.ok()) return false;
  for (const auto& s : plan->sequences) {
    if (sequences_.count(s.seq_id)) return true;
  }
  return false;
}

}  // namespace strata::worker
