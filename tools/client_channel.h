// How the strata client tools (generate, load, up's health wait) reach a
// router: plaintext, or TLS trusting --ca; and the bearer token they send
// (--token, or --token-file, which keeps it out of the process list).
#ifndef STRATA_TOOLS_CLIENT_CHANNEL_H_
#define STRATA_TOOLS_CLIENT_CHANNEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/flags.h"
#include "grpcpp/grpcpp.h"

namespace strata::tools {

// --ca, --token, --token-file.
base::FlagGroup ClientSecurityFlags();

class ClientChannel {
 public:
  // `ca_file` empty: plaintext. `token` empty: none sent.
  static absl::StatusOr<ClientChannel> Open(const std::string& server, const std::string& ca_file,
                                            std::string token);
  // From the flags of ClientSecurityFlags().
  static absl::StatusOr<ClientChannel> FromFlags(const std::string& server, const base::ParsedFlags& flags);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  // Adds the token to a call.
  void Authorize(grpc::ClientContext* ctx) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::string token_;
};

}  // namespace strata::tools

#endif  // STRATA_TOOLS_CLIENT_CHANNEL_H_
