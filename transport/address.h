// Network addresses as the command line and the control plane write them:
// "host:port", where host is an IPv4 address or a name resolved once.
#ifndef STRATA_TRANSPORT_ADDRESS_H_
#define STRATA_TRANSPORT_ADDRESS_H_

#include <netinet/in.h>

#include <string>

#include "absl/status/statusor.h"

namespace strata::transport {

struct HostPort {
  std::string host;
  int port = 0;
  std::string ToString() const;
};

// Parses "host:port" (port in [0, 65535]); INVALID_ARGUMENT naming `what`.
absl::StatusOr<HostPort> ParseHostPort(const std::string& text, const std::string& what);

// Resolves to an IPv4 socket address (getaddrinfo, AF_INET).
absl::StatusOr<sockaddr_in> Resolve(const HostPort& address);

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_ADDRESS_H_
