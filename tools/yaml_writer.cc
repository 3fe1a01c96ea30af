#include "tools/yaml_writer.h"

#include <cctype>

#include "absl/strings/str_split.h"

namespace strata::tools {
namespace {

using Json = nlohmann::ordered_json;

// A string YAML reads back as the same string without quotes.
bool IsPlain(const std::string& s) {
  if (s.empty() || s.find('\n') != std::string::npos) return false;
  static const char* kWords[] = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"};
  std::string lower;
  for (char c : s) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* w : kWords) {
    if (lower == w) return false;
  }
  const unsigned char first = s[0];
  if (!(std::isalpha(first) || first == '/' || first == '_' || first == '$')) return false;  // digits, -, ., quotes, indicators
  for (unsigned char c : s) {
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == '/' || c == ':' || c == '$' || c == '=' || c == '@' ||
          c == '+')) {
      return false;
    }
  }
  return s.back() != ':';
}

std::string Scalar(const Json& v) {
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    return IsPlain(s) ? s : Json(s).dump();
  }
  return v.dump();
}

bool IsEmptyCollection(const Json& v) { return (v.is_object() || v.is_array()) && v.empty(); }

bool IsBlockString(const Json& v) {
  return v.is_string() && v.get_ref<const std::string&>().find('\n') != std::string::npos;
}

void Write(const Json& v, int indent, std::string* out);

// After "key:" or "- ": the value on this line, or below it.
void WriteAfterKey(const Json& v, int indent, std::string* out) {
  if (IsBlockString(v)) {
    const std::string& s = v.get_ref<const std::string&>();
    *out += s.back() == '\n' ? " |\n" : " |-\n";
    std::string body = s.back() == '\n' ? s.substr(0, s.size() - 1) : s;
    for (absl::string_view line : absl::StrSplit(body, '\n')) {
      if (!line.empty()) *out += std::string(indent + 2, ' ');
      out->append(line.data(), line.size());
      *out += "\n";
    }
  } else if ((v.is_object() || v.is_array()) && !v.empty()) {
    *out += "\n";
    Write(v, v.is_array() ? indent : indent + 2, out);
  } else {
    *out += " " + (IsEmptyCollection(v) ? std::string(v.is_object() ? "{}" : "[]") : Scalar(v)) + "\n";
  }
}

void Write(const Json& v, int indent, std::string* out) {
  const std::string pad(indent, ' ');
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) {
      *out += pad + (IsPlain(it.key()) ? it.key() : Json(it.key()).dump()) + ":";
      WriteAfterKey(it.value(), indent, out);
    }
  } else if (v.is_array()) {
    for (const Json& e : v) {
      if (e.is_object() && !e.empty()) {
        // "- first: ..." then the other keys under it.
        std::string item;
        Write(e, indent + 2, &item);
        *out += pad + "- " + item.substr(indent + 2);
      } else if (e.is_array() && !e.empty()) {
        *out += pad + "-\n";
        Write(e, indent + 2, out);
      } else {
        *out += pad + "-";
        WriteAfterKey(e, indent, out);
      }
    }
  } else {
    *out += pad + Scalar(v) + "\n";
  }
}

}  // namespace

std::string ToYaml(const Json& value) {
  std::string out;
  if (IsEmptyCollection(value)) return value.is_object() ? "{}\n" : "[]\n";
  Write(value, 0, &out);
  return out;
}

std::string ToYamlDocuments(const std::vector<Json>& docs, const std::string& header) {
  std::string out = header;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i > 0 || !header.empty()) out += "---\n";
    out += ToYaml(docs[i]);
  }
  return out;
}

}  // namespace strata::tools
