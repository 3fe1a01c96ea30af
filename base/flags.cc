#include "base/flags.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace strata::base {
namespace {

// The config file is operator input, but a flag file this large is a mistake.
constexpr std::streamsize kMaxConfigBytes = 1 << 20;
// Where --help starts the text of each flag.
constexpr size_t kHelpColumn = 32;

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "flag table: %s\n", why.c_str());
  std::abort();
}

std::string NumberName(const std::string& name) {
  if (absl::EndsWith(name, "-ms")) return "MS";
  if (absl::EndsWith(name, "-mb")) return "MB";
  if (absl::EndsWith(name, "port")) return "PORT";
  if (absl::EndsWith(name, "-s")) return "S";
  return "N";
}

absl::Status Bad(const Flag& f, const std::string& why, const std::string& where) {
  return absl::InvalidArgumentError(absl::StrCat("--", f.name, ": ", why, where));
}

absl::StatusOr<int64_t> ParseInt(const Flag& f, absl::string_view text, const std::string& where) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) return Bad(f, absl::StrCat("\"", text, "\" is not an integer"), where);
  if (v < f.min || v > f.max) return Bad(f, absl::StrCat(v, " is outside [", f.min, ", ", f.max, "]"), where);
  return v;
}

absl::Status CheckAddress(const Flag& f, const std::string& text, const std::string& where) {
  const size_t colon = text.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(text.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return Bad(f, absl::StrCat("\"", text, "\" is not HOST:PORT with a port in [0, 65535]"), where);
  }
  return absl::OkStatus();
}

std::string RangeText(const Flag& f) {
  switch (f.type) {
    case FlagType::kInt:
    case FlagType::kIntList:
      return absl::StrCat("[", f.min, ", ", f.max, "]");
    case FlagType::kDouble:
      if (f.min_double == std::numeric_limits<double>::lowest() && f.max_double == std::numeric_limits<double>::max()) {
        return "";
      }
      return absl::StrCat("[", f.min_double, ", ", f.max_double, "]");
    default:
      return "";
  }
}

std::string LeftColumn(const Flag& f) {
  if (f.type == FlagType::kBool) return absl::StrCat("--", f.name, "[=true|false]");
  return absl::StrCat("--", f.name, " ", f.value_name);
}

std::string HelpLine(const Flag& f) {
  std::string left = absl::StrCat("  ", LeftColumn(f));
  left += left.size() + 2 <= kHelpColumn ? std::string(kHelpColumn - left.size(), ' ')
                                         : "\n" + std::string(kHelpColumn, ' ');
  std::string notes;
  if (const std::string range = RangeText(f); !range.empty()) notes = absl::StrCat(", in ", range);
  if (f.required) {
    absl::StrAppend(&notes, ", required");
  } else if (f.default_value.has_value() && !f.default_value->empty()) {
    absl::StrAppend(&notes, ", default ", *f.default_value);
  }
  if (!notes.empty()) notes = absl::StrCat("; ", notes.substr(2));
  return absl::StrCat(left, f.help, notes, "\n");
}

}  // namespace

absl::Status FlagTable::ParseValue(const Flag& f, const std::string& text, const std::string& where,
                                   ParsedFlags::Value* v) {
  v->text = text;
  v->has_value = true;
  switch (f.type) {
    case FlagType::kString:
      return absl::OkStatus();
    case FlagType::kInt: {
      absl::StatusOr<int64_t> i = ParseInt(f, text, where);
      if (!i.ok()) return i.status();
      v->int_value = *i;
      return absl::OkStatus();
    }
    case FlagType::kDouble:
      if (!absl::SimpleAtod(text, &v->double_value) || !std::isfinite(v->double_value)) {
        return Bad(f, absl::StrCat("\"", text, "\" is not a number"), where);
      }
      if (v->double_value < f.min_double || v->double_value > f.max_double) {
        return Bad(f, absl::StrCat(text, " is outside ", RangeText(f)), where);
      }
      return absl::OkStatus();
    case FlagType::kBool:
      if (text != "true" && text != "false") return Bad(f, absl::StrCat("\"", text, "\" is not true or false"), where);
      v->bool_value = text == "true";
      return absl::OkStatus();
    case FlagType::kChoice:
      for (const std::string& c : f.choices) {
        if (text == c) return absl::OkStatus();
      }
      return Bad(f, absl::StrCat("\"", text, "\" is not one of: ", absl::StrJoin(f.choices, ", ")), where);
    case FlagType::kAddress:
      return CheckAddress(f, text, where);
    case FlagType::kIntList:
      v->list.clear();
      for (absl::string_view part : absl::StrSplit(text, ',')) {
        absl::StatusOr<int64_t> i = ParseInt(f, part, where);
        if (!i.ok()) return i.status();
        v->list.push_back(*i);
      }
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

Flag Flag::Required() const {
  Flag f = *this;
  f.required = true;
  return f;
}

Flag StringFlag(std::string name, std::optional<std::string> default_value, std::string value_name,
                std::string help) {
  Flag f;
  f.name = std::move(name);
  f.default_value = std::move(default_value);
  f.value_name = std::move(value_name);
  f.help = std::move(help);
  return f;
}

Flag IntFlag(std::string name, std::optional<int64_t> default_value, int64_t min, int64_t max, std::string help) {
  Flag f = StringFlag(name, std::nullopt, NumberName(name), std::move(help));
  f.type = FlagType::kInt;
  if (default_value.has_value()) f.default_value = absl::StrCat(*default_value);
  f.min = min;
  f.max = max;
  return f;
}

Flag DoubleFlag(std::string name, double default_value, std::string help, double min, double max) {
  Flag f = StringFlag(std::move(name), absl::StrCat(default_value), "X", std::move(help));
  f.type = FlagType::kDouble;
  f.min_double = min;
  f.max_double = max;
  return f;
}

Flag BoolFlag(std::string name, bool default_value, std::string help) {
  Flag f = StringFlag(std::move(name), default_value ? "true" : "false", "", std::move(help));
  f.type = FlagType::kBool;
  return f;
}

Flag ChoiceFlag(std::string name, std::string default_value, std::vector<std::string> choices, std::string help) {
  Flag f = StringFlag(std::move(name), std::move(default_value), absl::StrJoin(choices, "|"), std::move(help));
  f.type = FlagType::kChoice;
  f.choices = std::move(choices);
  return f;
}

Flag AddressFlag(std::string name, std::string help) {
  Flag f = StringFlag(std::move(name), std::nullopt, "HOST:PORT", std::move(help));
  f.type = FlagType::kAddress;
  return f;
}

Flag IntListFlag(std::string name, std::optional<std::string> default_value, int64_t min, int64_t max,
                 std::string help) {
  Flag f = StringFlag(name, std::move(default_value), NumberName(name) + ",...", std::move(help));
  f.type = FlagType::kIntList;
  f.min = min;
  f.max = max;
  return f;
}

const ParsedFlags::Value& ParsedFlags::Get(const std::string& name, FlagType type) const {
  auto it = values_.find(name);
  if (it == values_.end()) Die(absl::StrCat("--", name, " is not declared in this table"));
  if (it->second.type != type) Die(absl::StrCat("--", name, " is read as another type than declared"));
  return it->second;
}

bool ParsedFlags::IsSet(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) Die(absl::StrCat("--", name, " is not declared in this table"));
  return it->second.set;
}

bool ParsedFlags::HasValue(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) Die(absl::StrCat("--", name, " is not declared in this table"));
  return it->second.has_value;
}

const std::string& ParsedFlags::String(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) Die(absl::StrCat("--", name, " is not declared in this table"));
  const FlagType t = it->second.type;
  if (t != FlagType::kString && t != FlagType::kChoice && t != FlagType::kAddress) {
    Die(absl::StrCat("--", name, " is not a string, choice or address flag"));
  }
  return it->second.text;
}

int64_t ParsedFlags::Int(const std::string& name) const {
  const Value& v = Get(name, FlagType::kInt);
  if (!v.has_value) Die(absl::StrCat("--", name, " has no value and no default"));
  return v.int_value;
}

double ParsedFlags::Double(const std::string& name) const { return Get(name, FlagType::kDouble).double_value; }

bool ParsedFlags::Bool(const std::string& name) const { return Get(name, FlagType::kBool).bool_value; }

const std::vector<int64_t>& ParsedFlags::IntList(const std::string& name) const {
  return Get(name, FlagType::kIntList).list;
}

std::vector<std::string> ParsedFlags::ArgsFor(const FlagGroup& group) const {
  std::vector<std::string> args;
  for (const Flag& f : group.flags) {
    if (IsSet(f.name)) args.push_back(absl::StrCat("--", f.name, "=", values_.at(f.name).text));
  }
  return args;
}

FlagTable::FlagTable(std::string usage, std::string summary, std::vector<FlagGroup> groups)
    : usage_(std::move(usage)), summary_(std::move(summary)), groups_(std::move(groups)) {
  groups_.push_back({"configuration",
                     {StringFlag("config", std::nullopt, "FILE.json",
                                 "flags as a JSON object with the same names; the command line wins")}});
  std::set<std::string> names;
  for (const FlagGroup& g : groups_) {
    for (const Flag& f : g.flags) {
      if (!names.insert(f.name).second) Die(absl::StrCat("--", f.name, " is declared twice in ", usage_));
      if (f.type == FlagType::kChoice && f.choices.empty()) Die(absl::StrCat("--", f.name, " has no choices"));
      if (!f.default_value.has_value()) continue;
      if (f.default_value->empty() && f.type != FlagType::kString) {
        Die(absl::StrCat("--", f.name, ": only a string flag may default to \"\""));
      }
      ParsedFlags::Value v;
      if (absl::Status s = ParseValue(f, *f.default_value, " (its declared default)", &v); !s.ok()) {
        Die(std::string(s.message()));
      }
    }
  }
}

const Flag* FlagTable::Find(const std::string& name) const {
  for (const FlagGroup& g : groups_) {
    for (const Flag& f : g.flags) {
      if (f.name == name) return &f;
    }
  }
  return nullptr;
}

absl::Status FlagTable::ReadConfig(const std::string& path, std::map<std::string, std::string>* given,
                                   std::map<std::string, std::string>* from) const {
  const Flag& config = *Find("config");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Bad(config, absl::StrCat("cannot read ", path), "");
  std::string text(static_cast<size_t>(kMaxConfigBytes) + 1, '\0');
  in.read(text.data(), kMaxConfigBytes + 1);
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > static_cast<size_t>(kMaxConfigBytes)) {
    return Bad(config, absl::StrCat(path, " is larger than ", kMaxConfigBytes, " bytes"), "");
  }
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Bad(config, absl::StrCat(path, " is not a JSON object"), "");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const Flag* f = Find(it.key());
    if (f == nullptr || f->name == "config") {
      return Bad(config, absl::StrCat(path, ": unknown key \"", it.key(), "\""), "");
    }
    if (given->count(it.key())) continue;  // the command line wins
    std::string value;
    if (it->is_string()) {
      value = it->get<std::string>();
    } else if (it->is_boolean() || it->is_number()) {
      value = it->dump();
    } else if (it->is_array() && std::all_of(it->begin(), it->end(), [](const auto& e) { return e.is_number_integer(); })) {
      std::vector<std::string> parts;
      for (const auto& e : *it) parts.push_back(e.dump());
      value = absl::StrJoin(parts, ",");
    } else {
      return Bad(*f, "must be a string, number, boolean or list of integers", absl::StrCat(" (in ", path, ")"));
    }
    (*given)[it.key()] = value;
    (*from)[it.key()] = path;
  }
  return absl::OkStatus();
}

absl::StatusOr<ParsedFlags> FlagTable::Parse(const std::vector<std::string>& args) const {
  std::map<std::string, std::string> given, from;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", a, "\""));
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Flag* f = Find(name);
    if (f == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (eq == std::string::npos) {
      // No positional arguments exist, so a word after a bool flag is its
      // value (checked below), and a flag after it means "true".
      const bool next_is_value = i + 1 < args.size() && args[i + 1].compare(0, 2, "--") != 0;
      if (f->type == FlagType::kBool && !next_is_value) {
        value = "true";
      } else if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      } else {
        value = args[++i];
      }
    }
    given[name] = value;
  }
  if (auto it = given.find("config"); it != given.end()) {
    if (absl::Status s = ReadConfig(it->second, &given, &from); !s.ok()) return s;
  }
  ParsedFlags parsed;
  for (const FlagGroup& g : groups_) {
    for (const Flag& f : g.flags) {
      ParsedFlags::Value& v = parsed.values_[f.name];
      v.type = f.type;
      auto it = given.find(f.name);
      if (it == given.end() && f.required) {
        return absl::InvalidArgumentError(absl::StrCat("--", f.name, " is required (", f.help, ")"));
      }
      if (it == given.end() && !f.default_value.has_value()) continue;
      v.set = it != given.end();
      const std::string where = from.count(f.name) ? absl::StrCat(" (in ", from[f.name], ")") : "";
      if (absl::Status s = ParseValue(f, v.set ? it->second : *f.default_value, where, &v); !s.ok()) return s;
    }
  }
  return parsed;
}

std::string FlagTable::Help() const {
  std::string out = absl::StrCat("usage: ", usage_, "\n");
  if (!summary_.empty()) absl::StrAppend(&out, summary_, "\n");
  for (const FlagGroup& g : groups_) {
    absl::StrAppend(&out, "\n", g.title, ":\n");
    for (const Flag& f : g.flags) absl::StrAppend(&out, HelpLine(f));
  }
  absl::StrAppend(&out, "\n  --help", std::string(kHelpColumn - 8, ' '), "this text\n");
  return out;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

}  // namespace strata::base
