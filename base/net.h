// Small network helpers every binary and test may use.
#ifndef STRATA_BASE_NET_H_
#define STRATA_BASE_NET_H_

namespace strata::base {

// A TCP port that was free on 127.0.0.1 a moment ago, for launchers and
// tests that must name ports before the processes that listen on them
// start. Ports come from below the kernel's ephemeral range, so client
// sockets never take them; another picker may still take the same one in
// between, and callers that cannot tolerate that should listen on port 0
// and report the port instead.
// Crashes with a message when no socket can be bound at all (the machine
// is out of file descriptors or has no loopback).
int PickFreePort();

// Whether something on this host listens on TCP `port` (any address), as a
// launcher checks a port it was told to use before it starts the process
// that binds it. gRPC and cpp-httplib servers set SO_REUSEPORT, so a second
// server on a taken port starts without an error and the two split the
// clients between them; this probe sets only SO_REUSEADDR, so it is refused
// by any listener, reuse-port or not, and not by connections in TIME_WAIT.
bool PortInUse(int port);

}  // namespace strata::base

#endif  // STRATA_BASE_NET_H_
