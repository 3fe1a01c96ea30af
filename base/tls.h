// TLS for every gRPC server and channel strata opens, from PEM files:
// the public API's server certificate (optionally verifying callers'
// certificates), and the control plane's mutual TLS, where the router and
// the workers each hold a certificate signed by one CA and check the
// other's. Files are read and checked once (the key matches the
// certificate, the certificate chains to the CA), so a wrong file is a
// clear error at start, not a failed handshake later.
#ifndef STRATA_BASE_TLS_H_
#define STRATA_BASE_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "openssl/evp.h"
#include "openssl/ssl.h"
#include "openssl/x509.h"

namespace strata::base {

// Paths as the flags give them; all empty: TLS off.
struct TlsFiles {
  std::string ca;    // the CA that signs the peers' certificates (empty: peers are not verified)
  std::string cert;  // this process's certificate chain
  std::string key;   // its private key
  bool empty() const { return ca.empty() && cert.empty() && key.empty(); }
};

// The PEM texts, checked.
struct TlsMaterial {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
  std::string common_name;  // the certificate's subject CN
};

// Reads and checks `files`; errors name the flag ("--mtls-cert: ..." for
// prefix "mtls"; "--cert: ..." for an empty prefix).
// With `need_ca` the CA is required and the certificate must chain to it.
absl::StatusOr<TlsMaterial> LoadTls(const TlsFiles& files, const std::string& flag_prefix, bool need_ca);

// How a server treats its callers' certificates.
enum class ClientCerts {
  kNone,      // not asked for
  kOptional,  // asked for; one that is presented must chain to the CA
  kRequired,  // must be presented and chain to the CA (mutual TLS)
};

// Server credentials: insecure when `material` is null.
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsMaterial* material, ClientCerts clients);
// Channel credentials: insecure when `material` is null; otherwise the
// server must present a certificate chaining to material->ca_pem, and this
// process presents its own when it has one.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsMaterial* material);

// Accepts only callers whose verified certificate's CN is `common_name`
// (the control plane: a worker takes Health, Stats, Drain and Abort only
// from the router). Every call of the server it is set on passes through
// it; others get PERMISSION_DENIED.
class PeerNameCheck : public grpc::AuthMetadataProcessor {
 public:
  explicit PeerNameCheck(std::string common_name) : common_name_(std::move(common_name)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context, OutputMetadata* consumed,
                       OutputMetadata* response) override;

 private:
  std::string common_name_;
};

// OpenSSL objects from PEM text, for libraries that take them (cpp-httplib's
// SSLServer); null when the text holds none. The caller owns each
// (X509_free, EVP_PKEY_free, X509_STORE_free).
X509* ParseCertificate(const std::string& pem);  // the first certificate
EVP_PKEY* ParsePrivateKey(const std::string& pem);
X509_STORE* ParseCertStore(const std::string& pem);  // every certificate of a CA file

// An OpenSSL context for mutual TLS on a plain socket (the TP rendezvous
// store): this process's certificate, peers verified against the CA and
// required on both sides. Null when the material does not load. The
// caller owns it (SSL_CTX_free).
SSL_CTX* NewMutualTlsContext(const TlsMaterial& material, bool server);

// The CN of a caller's verified certificate, empty when it has none.
std::string PeerCommonName(const grpc::AuthContext& context);

}  // namespace strata::base

#endif  // STRATA_BASE_TLS_H_
