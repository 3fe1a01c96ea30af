// Stop signals and drain, the same in every binary: SIGTERM and SIGINT are
// blocked in all threads and taken by one thread with sigwait, so a signal
// never interrupts a gRPC or UCX thread mid-call and drain code runs as
// ordinary code, not in a signal handler.
#ifndef STRATA_BASE_SIGNALS_H_
#define STRATA_BASE_SIGNALS_H_

#include <chrono>
#include <functional>
#include <string>

namespace strata::base {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, and so in every thread it
// starts afterwards (they inherit the mask), and ignores SIGPIPE (a peer
// that goes away becomes an EPIPE error, not a dead process). Call at the
// top of main, before any thread starts.
void BlockStopSignals();

// Waits up to `timeout` for SIGTERM or SIGINT (blocked by
// BlockStopSignals); returns the signal, or 0 when none came.
int WaitForStopSignal(std::chrono::milliseconds timeout);

// Starts a detached thread that waits for the first stop signal, writes
// "<program>: signal N, draining" to stderr and calls `drain` once. `drain`
// and what it captures must stay valid until the process exits.
void DrainOnStopSignal(const std::string& program, std::function<void()> drain);

// Starts a detached thread that calls `reload` on every SIGHUP (blocked by
// BlockStopSignals; without this call a SIGHUP stays pending and does
// nothing). `reload` must stay valid until the process exits.
void ReloadOnHangup(const std::string& program, std::function<void()> reload);

}  // namespace strata::base

#endif  // STRATA_BASE_SIGNALS_H_
