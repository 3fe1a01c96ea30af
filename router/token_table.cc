#include "router/token_table.h"

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "openssl/sha.h"

namespace strata::router {
namespace {

constexpr size_t kMaxFileBytes = 16 << 20;
constexpr size_t kMinTokenChars = 16;
constexpr size_t kMaxTokenChars = 4096;

using Json = nlohmann::json;

absl::Status Bad(size_t i, const std::string& name, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("tokens[", i, "]", name.empty() ? "" : absl::StrCat(" (\"", name, "\")"), ": ", why));
}

bool IsHex64(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

bool TokenRule::MayUse(const std::string& model) const {
  for (const auto& m : models) {
    if (m == "*" || m == model) return true;
  }
  return false;
}

std::string Sha256Hex(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : digest) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

absl::StatusOr<TokenTable> TokenTable::Parse(std::string_view text) {
  Json doc = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!doc.is_object() || !doc.contains("tokens") || !doc["tokens"].is_array()) {
    return absl::InvalidArgumentError("expected an object with a \"tokens\" array");
  }
  TokenTable table;
  std::set<std::string> names;
  const Json& tokens = doc["tokens"];
  for (size_t i = 0; i < tokens.size(); ++i) {
    const Json& e = tokens[i];
    if (!e.is_object()) return Bad(i, "", "expected an object");
    TokenRule r;
    if (!e.contains("name") || !e["name"].is_string() || e["name"].get<std::string>().empty()) {
      return Bad(i, "", "\"name\" must be a non-empty string");
    }
    r.name = e["name"].get<std::string>();
    if (r.name.size() > 256) return Bad(i, "", "\"name\" is over 256 characters");
    if (!names.insert(r.name).second) return Bad(i, r.name, "another entry has this name");
    std::string digest;
    const bool has_token = e.contains("token"), has_digest = e.contains("token_sha256");
    if (has_token == has_digest) return Bad(i, r.name, "give exactly one of \"token\" and \"token_sha256\"");
    if (has_token) {
      if (!e["token"].is_string()) return Bad(i, r.name, "\"token\" must be a string");
      const std::string token = e["token"].get<std::string>();
      if (token.size() < kMinTokenChars || token.size() > kMaxTokenChars) {
        return Bad(i, r.name, absl::StrCat("\"token\" must have ", kMinTokenChars, " to ", kMaxTokenChars,
                                           " characters"));
      }
      for (unsigned char c : token) {
        if (c <= 0x20 || c >= 0x7f) return Bad(i, r.name, "\"token\" must be printable ASCII without spaces");
      }
      digest = Sha256Hex(token);
    } else {
      if (!e["token_sha256"].is_string() || !IsHex64(e["token_sha256"].get<std::string>())) {
        return Bad(i, r.name, "\"token_sha256\" must be 64 lower-case hex digits");
      }
      digest = e["token_sha256"].get<std::string>();
    }
    if (!e.contains("models") || !e["models"].is_array() || e["models"].empty()) {
      return Bad(i, r.name, "\"models\" must be a non-empty array of model names (\"*\": any)");
    }
    for (const Json& m : e["models"]) {
      if (!m.is_string() || m.get<std::string>().empty()) return Bad(i, r.name, "\"models\" holds a non-string");
      r.models.push_back(m.get<std::string>());
    }
    if (e.contains("requests_per_second")) {
      const Json& v = e["requests_per_second"];
      if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1e9) {
        return Bad(i, r.name, "\"requests_per_second\" must be a number from 0 to 1e9");
      }
      r.requests_per_second = v.get<double>();
    }
    if (e.contains("max_concurrent")) {
      const Json& v = e["max_concurrent"];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (int64_t{1} << 30)) {
        return Bad(i, r.name, "\"max_concurrent\" must be an integer from 0 to 2^30");
      }
      r.max_concurrent = v.get<int64_t>();
    }
    if (e.contains("max_priority")) {
      const Json& v = e["max_priority"];
      if (!v.is_number_integer() || v.get<int64_t>() < -1000000 || v.get<int64_t>() > 1000000) {
        return Bad(i, r.name, "\"max_priority\" must be an integer from -1e6 to 1e6");
      }
      r.max_priority = static_cast<int32_t>(v.get<int64_t>());
    }
    if (!table.by_digest_.emplace(digest, std::move(r)).second) {
      return Bad(i, e["name"].get<std::string>(), "another entry has the same token");
    }
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--auth-tokens: cannot read ", path));
  std::string text(kMaxFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxFileBytes) return absl::InvalidArgumentError(absl::StrCat("--auth-tokens: ", path, " is over 16 MiB"));
  auto table = Parse(text);
  if (!table.ok()) return absl::InvalidArgumentError(absl::StrCat("--auth-tokens: ", path, ": ", table.status().message()));
  return table;
}

const TokenRule* TokenTable::Find(std::string_view token) const {
  auto it = by_digest_.find(Sha256Hex(token));
  return it == by_digest_.end() ? nullptr : &it->second;
}

}  // namespace strata::router
