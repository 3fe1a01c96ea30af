// A throwaway certificate authority for a local cluster and for tests
// (`strata up --tls`, the security tests): a CA and certificates it signs,
// made with OpenSSL's library (ECDSA P-256, SHA-256, valid for 30 days),
// written as PEM files with the keys readable by their owner only. Nothing
// made here is meant to outlive the cluster it was made for.
#ifndef STRATA_BASE_LOCAL_PKI_H_
#define STRATA_BASE_LOCAL_PKI_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata::base {

struct CertRequest {
  std::string name;         // files NAME.crt and NAME.key
  std::string common_name;  // the subject CN (the role: strata-router, strata-worker, a caller's name)
  std::vector<std::string> hosts = {"127.0.0.1", "localhost"};  // subjectAltName: IPs and DNS names
};

// Writes DIR/ca.crt, DIR/ca.key and, for each request, DIR/NAME.crt and
// DIR/NAME.key (DIR is created). The CA's CN is `ca_name`.
absl::Status MakeLocalPki(const std::string& dir, const std::string& ca_name,
                          const std::vector<CertRequest>& certs);

}  // namespace strata::base

#endif  // STRATA_BASE_LOCAL_PKI_H_
