#include "base/tls.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "openssl/bio.h"
#include "openssl/err.h"
#include "openssl/pem.h"
#include "openssl/x509.h"
#include "openssl/x509_vfy.h"

namespace strata::base {
namespace {

constexpr std::streamsize kMaxPemBytes = 1 << 20;

absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::string text(static_cast<size_t>(kMaxPemBytes) + 1, '\0');
  in.read(text.data(), kMaxPemBytes + 1);
  text.resize(static_cast<size_t>(in.gcount()));
  if (static_cast<std::streamsize>(text.size()) > kMaxPemBytes) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is over 1 MiB, not a PEM file"));
  }
  if (text.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is not a PEM file"));
  }
  return text;
}

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

struct BioFree { void operator()(BIO* b) const { BIO_free(b); } };
struct X509Free { void operator()(X509* x) const { X509_free(x); } };
struct KeyFree { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
struct StoreFree { void operator()(X509_STORE* s) const { X509_STORE_free(s); } };
struct StoreCtxFree { void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); } };
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;

Bio MemBio(const std::string& text) { return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size()))); }

std::string CommonName(X509* cert) {
  char cn[256] = {0};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn)) < 0) return "";
  return cn;
}

// The certificate chains to one of the certificates in `ca_pem`, through
// the intermediates that follow it in `cert_pem`.
absl::Status Verify(X509* cert, const std::string& cert_pem, const std::string& ca_pem, const std::string& where) {
  std::unique_ptr<X509_STORE, StoreFree> store(ParseCertStore(ca_pem));
  if (!store) return absl::InvalidArgumentError(absl::StrCat(where, ": the CA file holds no certificate"));
  STACK_OF(X509)* chain = sk_X509_new_null();
  Bio rest = MemBio(cert_pem);
  Cert leaf(PEM_read_bio_X509(rest.get(), nullptr, nullptr, nullptr));  // skipped: `cert` is it
  while (X509* c = PEM_read_bio_X509(rest.get(), nullptr, nullptr, nullptr)) sk_X509_push(chain, c);
  ERR_clear_error();
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), cert, chain);
  const int ok = X509_verify_cert(ctx.get());
  const int err = X509_STORE_CTX_get_error(ctx.get());
  sk_X509_pop_free(chain, X509_free);
  if (ok != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": the certificate does not chain to the CA (", X509_verify_cert_error_string(err), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TlsMaterial> LoadTls(const TlsFiles& files, const std::string& flag_prefix, bool need_ca) {
  const std::string dash = flag_prefix.empty() ? "--" : absl::StrCat("--", flag_prefix, "-");
  const std::string cert_flag = absl::StrCat(dash, "cert");
  const std::string key_flag = absl::StrCat(dash, "key");
  const std::string ca_flag = absl::StrCat(dash, "ca");
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(cert_flag, " and ", key_flag, " go together"));
  }
  if (need_ca && files.ca.empty()) return absl::InvalidArgumentError(absl::StrCat(ca_flag, " is required"));
  if (need_ca && files.cert.empty()) return absl::InvalidArgumentError(absl::StrCat(cert_flag, " is required"));
  TlsMaterial m;
  if (!files.ca.empty()) {
    auto ca = ReadPem(files.ca, ca_flag);
    if (!ca.ok()) return ca.status();
    m.ca_pem = std::move(*ca);
  }
  if (files.cert.empty()) return m;
  auto cert_pem = ReadPem(files.cert, cert_flag);
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = ReadPem(files.key, key_flag);
  if (!key_pem.ok()) return key_pem.status();
  Cert cert(ParseCertificate(*cert_pem));
  if (!cert) return absl::InvalidArgumentError(absl::StrCat(cert_flag, ": ", files.cert, ": ", OpenSslError()));
  std::unique_ptr<EVP_PKEY, KeyFree> key(ParsePrivateKey(*key_pem));
  if (!key) return absl::InvalidArgumentError(absl::StrCat(key_flag, ": ", files.key, ": ", OpenSslError()));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, ": ", files.key, " is not the key of the certificate in ", files.cert));
  }
  if (!m.ca_pem.empty()) {
    if (auto s = Verify(cert.get(), *cert_pem, m.ca_pem, cert_flag); !s.ok()) return s;
  }
  m.common_name = CommonName(cert.get());
  m.cert_pem = std::move(*cert_pem);
  m.key_pem = std::move(*key_pem);
  return m;
}

X509* ParseCertificate(const std::string& pem) {
  Bio b = MemBio(pem);
  return PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr);
}

EVP_PKEY* ParsePrivateKey(const std::string& pem) {
  Bio b = MemBio(pem);
  return PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr);
}

X509_STORE* ParseCertStore(const std::string& pem) {
  X509_STORE* store = X509_STORE_new();
  Bio b = MemBio(pem);
  int loaded = 0;
  while (X509* c = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, c);
    X509_free(c);
    ++loaded;
  }
  ERR_clear_error();
  if (loaded > 0) return store;
  X509_STORE_free(store);
  return nullptr;
}

SSL_CTX* NewMutualTlsContext(const TlsMaterial& material, bool server) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  std::unique_ptr<X509, X509Free> cert(ParseCertificate(material.cert_pem));
  std::unique_ptr<EVP_PKEY, KeyFree> key(ParsePrivateKey(material.key_pem));
  X509_STORE* cas = ParseCertStore(material.ca_pem);
  const bool ok = cert && key && cas != nullptr && SSL_CTX_use_certificate(ctx, cert.get()) == 1 &&
                  SSL_CTX_use_PrivateKey(ctx, key.get()) == 1;
  if (cas != nullptr) SSL_CTX_set_cert_store(ctx, cas);  // owned by ctx from here
  if (!ok) {
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return nullptr;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return ctx;
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsMaterial* material, ClientCerts clients) {
  if (material == nullptr) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions o;
  switch (clients) {
    case ClientCerts::kNone:
      o.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
      break;
    case ClientCerts::kOptional:
      o.client_certificate_request = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
      break;
    case ClientCerts::kRequired:
      o.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
      break;
  }
  if (clients != ClientCerts::kNone) o.pem_root_certs = material->ca_pem;
  o.pem_key_cert_pairs.push_back({material->key_pem, material->cert_pem});
  return grpc::SslServerCredentials(o);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsMaterial* material) {
  if (material == nullptr) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = material->ca_pem;
  o.pem_private_key = material->key_pem;
  o.pem_cert_chain = material->cert_pem;
  return grpc::SslCredentials(o);
}

std::string PeerCommonName(const grpc::AuthContext& context) {
  if (!context.IsPeerAuthenticated()) return "";
  for (const auto& v : context.FindPropertyValues("x509_common_name")) return std::string(v.data(), v.size());
  return "";
}

grpc::Status PeerNameCheck::Process(const InputMetadata&, grpc::AuthContext* context, OutputMetadata*,
                                    OutputMetadata*) {
  const std::string peer = PeerCommonName(*context);
  if (peer == common_name_) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      peer.empty() ? "this service answers only a caller with a verified certificate"
                                   : absl::StrCat("this service does not answer certificate '", peer, "'"));
}

}  // namespace strata::base
