// The progress watchdog of a pipeline's steps in flight: how long a step
// may take before the pipeline counts as hung, from the steps that came
// back before it. Heartbeats see a process that stopped; this sees a
// pipeline that stopped moving while every process still answers (a cut
// link between two stages, a stage stuck in a collective).
//
// A step of r rows gets floor + factor x (the slowest recent step of at most
// r rows, scaled by r over its rows), at most the step timeout: a decode
// step is judged by decode steps, a prefill chunk larger than any seen is
// judged by the cost per row of the steps it is larger than (an
// overestimate: those carry a fixed cost each row is charged again), and
// with no history at all the step timeout holds.
#ifndef STRATA_ROUTER_STEP_WATCHDOG_H_
#define STRATA_ROUTER_STEP_WATCHDOG_H_

#include <chrono>
#include <cstdint>
#include <deque>

namespace strata::router {

struct StepWatchdogOptions {
  std::chrono::milliseconds floor{2000};
  double factor = 8.0;
  std::chrono::milliseconds cap{30000};  // the step timeout
  size_t history = 64;                   // steps remembered
};

class StepWatchdog {
 public:
  explicit StepWatchdog(const StepWatchdogOptions& options) : options_(options) {}
  // A step of `rows` rows came back `seconds` after it was sent.
  void Record(int64_t rows, double seconds);
  // How long a step of `rows` rows may stay out.
  std::chrono::milliseconds Deadline(int64_t rows) const;
  void Clear() { history_.clear(); }

 private:
  struct Seen {
    int64_t rows;
    double seconds;
  };
  StepWatchdogOptions options_;
  std::deque<Seen> history_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_STEP_WATCHDOG_H_
