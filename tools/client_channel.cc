#include "tools/client_channel.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/tls.h"

namespace strata::tools {

base::FlagGroup ClientSecurityFlags() {
  return {"security",
          {base::StringFlag("ca", std::nullopt, "FILE", "TLS: trust the router's certificate signed by this CA"),
           base::StringFlag("token", std::nullopt, "TOKEN", "the bearer token to send"),
           base::StringFlag("token-file", std::nullopt, "FILE", "read the bearer token from this file")}};
}

absl::StatusOr<ClientChannel> ClientChannel::Open(const std::string& server, const std::string& ca_file,
                                                  std::string token) {
  ClientChannel c;
  c.token_ = std::move(token);
  if (ca_file.empty()) {
    c.channel_ = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
    return c;
  }
  auto tls = base::LoadTls({ca_file, "", ""}, "", false);
  if (!tls.ok()) return tls.status();
  c.channel_ = grpc::CreateChannel(server, base::ChannelCredentials(&*tls));
  return c;
}

absl::StatusOr<ClientChannel> ClientChannel::FromFlags(const std::string& server, const base::ParsedFlags& f) {
  if (f.IsSet("token") && f.IsSet("token-file")) return absl::InvalidArgumentError("give --token or --token-file, not both");
  std::string token = f.String("token");
  if (f.IsSet("token-file")) {
    std::ifstream in(f.String("token-file"));
    if (!in || !std::getline(in, token)) {
      return absl::InvalidArgumentError(absl::StrCat("--token-file: cannot read ", f.String("token-file")));
    }
    token = std::string(absl::StripAsciiWhitespace(token));
  }
  return Open(server, f.String("ca"), std::move(token));
}

void ClientChannel::Authorize(grpc::ClientContext* ctx) const {
  if (!token_.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
}

}  // namespace strata::tools
