#include "base/local_pki.h"

#include <sys/stat.h>

#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "openssl/bn.h"
#include "openssl/ec.h"
#include "openssl/evp.h"
#include "openssl/pem.h"
#include "openssl/rand.h"
#include "openssl/x509.h"
#include "openssl/x509v3.h"

namespace strata::base {
namespace {

struct KeyFree { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
struct X509Free { void operator()(X509* x) const { X509_free(x); } };
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

constexpr long kValidSeconds = 30L * 24 * 3600;

Key NewKey() { return Key(EVP_EC_gen("P-256")); }

bool IsIp(const std::string& host) {
  return !host.empty() && host.find_first_not_of("0123456789.") == std::string::npos;
}

bool AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `key`, signed by `issuer_key` (self-signed when
// `issuer` is null).
Cert Sign(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, bool ca,
          const std::vector<std::string>& hosts) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValidSeconds);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("strata"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer ? issuer : cert.get();
  bool ok = true;
  if (ca) {
    ok &= AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    ok &= AddExt(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    ok &= AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    ok &= AddExt(cert.get(), signer, NID_key_usage, "critical,digitalSignature,keyEncipherment");
    ok &= AddExt(cert.get(), signer, NID_ext_key_usage, "serverAuth,clientAuth");
    std::vector<std::string> alt;
    for (const auto& h : hosts) alt.push_back(absl::StrCat(IsIp(h) ? "IP:" : "DNS:", h));
    if (!alt.empty()) ok &= AddExt(cert.get(), signer, NID_subject_alt_name, absl::StrJoin(alt, ","));
  }
  ok &= AddExt(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (!ok || X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return nullptr;
  return cert;
}

absl::Status Write(const std::string& path, bool secret, const std::function<int(FILE*)>& write) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  if (secret) ::chmod(path.c_str(), 0600);
  const int ok = write(f);
  std::fclose(f);
  if (ok != 1) return absl::InternalError(absl::StrCat("cannot write PEM to ", path));
  return absl::OkStatus();
}

absl::Status WritePair(const std::string& dir, const std::string& name, X509* cert, EVP_PKEY* key) {
  if (auto s = Write(absl::StrCat(dir, "/", name, ".crt"), false, [&](FILE* f) { return PEM_write_X509(f, cert); });
      !s.ok()) {
    return s;
  }
  return Write(absl::StrCat(dir, "/", name, ".key"), true, [&](FILE* f) {
    return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  });
}

}  // namespace

absl::Status MakeLocalPki(const std::string& dir, const std::string& ca_name,
                          const std::vector<CertRequest>& certs) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::UnavailableError(absl::StrCat("cannot make ", dir));
  }
  Key ca_key = NewKey();
  if (!ca_key) return absl::InternalError("OpenSSL cannot make a P-256 key");
  Cert ca = Sign(ca_key.get(), ca_name, nullptr, ca_key.get(), true, {});
  if (!ca) return absl::InternalError("OpenSSL cannot sign the CA certificate");
  if (auto s = WritePair(dir, "ca", ca.get(), ca_key.get()); !s.ok()) return s;
  for (const CertRequest& r : certs) {
    if (r.name.empty() || r.name.find('/') != std::string::npos || r.name == "ca") {
      return absl::InvalidArgumentError(absl::StrCat("bad certificate file name '", r.name, "'"));
    }
    Key key = NewKey();
    if (!key) return absl::InternalError("OpenSSL cannot make a P-256 key");
    Cert cert = Sign(key.get(), r.common_name, ca.get(), ca_key.get(), false, r.hosts);
    if (!cert) return absl::InternalError(absl::StrCat("OpenSSL cannot sign the certificate of ", r.name));
    if (auto s = WritePair(dir, r.name, cert.get(), key.get()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace strata::base
