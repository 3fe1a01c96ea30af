// strata plan: how many GPUs (or CPU hosts) a model needs and how it splits
// over them (tools/plan.h has the policy), printed for people or as one
// JSON object (--json), and with --out DIR the settings to run it with
// (tools/plan_launch.h). A model that does not fit exits with status 1 and
// the reason; a bad flag with status 2 naming it.
#ifndef STRATA_TOOLS_PLAN_COMMAND_H_
#define STRATA_TOOLS_PLAN_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/flags.h"
#include "nlohmann/json.hpp"
#include "tools/plan.h"

namespace strata::tools {

const base::FlagTable& PlanFlags();
absl::Status PlanCommand(const base::ParsedFlags& flags);

// The request the flags describe (INVALID_ARGUMENT naming a bad flag).
absl::StatusOr<PlanRequest> PlanRequestFromFlags(const base::ParsedFlags& flags);
// The --json object.
nlohmann::ordered_json PlanToJson(const Plan& plan, const PlanRequest& request);

}  // namespace strata::tools

#endif  // STRATA_TOOLS_PLAN_COMMAND_H_
