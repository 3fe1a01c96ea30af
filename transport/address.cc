#include "transport/address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strata::transport {

std::string HostPort::ToString() const { return absl::StrCat(host, ":", port); }

absl::StatusOr<HostPort> ParseHostPort(const std::string& text, const std::string& what) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": \"", text, "\" is not HOST:PORT"));
  }
  HostPort hp;
  hp.host = text.substr(0, colon);
  if (!absl::SimpleAtoi(text.substr(colon + 1), &hp.port) || hp.port < 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": port in \"", text, "\" is not in [0, 65535]"));
  }
  return hp;
}

absl::StatusOr<sockaddr_in> Resolve(const HostPort& address) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(address.host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve host \"", address.host, "\": ", gai_strerror(rc)));
  }
  sockaddr_in out;
  std::memcpy(&out, res->ai_addr, sizeof(out));
  freeaddrinfo(res);
  out.sin_port = htons(static_cast<uint16_t>(address.port));
  return out;
}

}  // namespace strata::transport
