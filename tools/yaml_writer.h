// JSON values written as block-style YAML, for the Kubernetes manifests
// `strata plan` generates (the same objects kubectl would take as JSON).
// Strings that YAML could read as anything else (numbers, booleans, null,
// leading indicators, ": ", " #") are double-quoted with JSON's escapes,
// which YAML reads alike; strings with newlines become literal blocks.
#ifndef STRATA_TOOLS_YAML_WRITER_H_
#define STRATA_TOOLS_YAML_WRITER_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace strata::tools {

// One document, without the "---" line.
std::string ToYaml(const nlohmann::ordered_json& value);

// Documents separated by "---" lines; `header` (comment lines, each "# ...")
// comes first.
std::string ToYamlDocuments(const std::vector<nlohmann::ordered_json>& docs, const std::string& header = "");

}  // namespace strata::tools

#endif  // STRATA_TOOLS_YAML_WRITER_H_
