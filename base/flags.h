// The flag table every strata binary parses its command line with. A flag
// is declared once, with its name, type, default, range and help; a binary's
// table is the union of shared groups (base/flag_groups.h) and its own.
// From the table come the parser, `--help`, and `--config FILE.json` (a JSON
// object with the same names; the command line wins, unknown keys are
// errors). Every bad value is INVALID_ARGUMENT naming the flag and the
// value, which the binaries turn into exit status 2.
//
//   const base::FlagTable table("strata-x [flags]", "does x",
//       {{"flags", {base::IntFlag("port", 0, 0, 65535, "gRPC port (0: any)")}}});
//   STRATA_ASSIGN_OR_RETURN(base::ParsedFlags f, table.Parse(args));
//   int port = f.Int("port");
//
// Spellings: "--name value", "--name=value"; a bool flag alone means true,
// and takes "true" or "false" as its value ("--json", "--ucx-peer-errors
// false"). Asking a ParsedFlags for a name its table lacks, or as the wrong
// type, is a programming error and crashes with a message.
#ifndef STRATA_BASE_FLAGS_H_
#define STRATA_BASE_FLAGS_H_

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::base {

enum class FlagType {
  kString,
  kInt,      // in [min, max]
  kDouble,   // in [min_double, max_double]
  kBool,     // true | false
  kChoice,   // one of `choices`
  kAddress,  // HOST:PORT, port in [0, 65535]
  kIntList,  // comma-separated, each in [min, max]
};

struct Flag {
  std::string name;  // without the dashes
  FlagType type = FlagType::kString;
  // The default in command-line spelling, checked like a given value; none:
  // the flag is unset unless given (ParsedFlags::IsSet tells).
  std::optional<std::string> default_value;
  std::string value_name;  // for --help: DIR, N, HOST:PORT, ...
  std::string help;
  int64_t min = 0, max = 0;
  double min_double = 0, max_double = 0;
  std::vector<std::string> choices;
  bool required = false;

  // A copy that must be given.
  Flag Required() const;
};

// The declarations. Ints and int lists show N in --help, or MS / MB / PORT
// / S when the name ends that way (-ms, -mb, port, -s).
Flag StringFlag(std::string name, std::optional<std::string> default_value, std::string value_name,
                std::string help);
Flag IntFlag(std::string name, std::optional<int64_t> default_value, int64_t min, int64_t max, std::string help);
Flag DoubleFlag(std::string name, double default_value, std::string help,
                double min = std::numeric_limits<double>::lowest(),
                double max = std::numeric_limits<double>::max());
Flag BoolFlag(std::string name, bool default_value, std::string help);
Flag ChoiceFlag(std::string name, std::string default_value, std::vector<std::string> choices, std::string help);
Flag AddressFlag(std::string name, std::string help);
Flag IntListFlag(std::string name, std::optional<std::string> default_value, int64_t min, int64_t max,
                 std::string help);

// A titled group of flags, as --help shows it.
struct FlagGroup {
  std::string title;
  std::vector<Flag> flags;
};

// The values of one parse. Copyable; no reference to its table.
class ParsedFlags {
 public:
  // Given on the command line or in the --config file (not just defaulted).
  bool IsSet(const std::string& name) const;
  // Whether a value is there, given or defaulted.
  bool HasValue(const std::string& name) const;
  // String, choice and address flags; "" when there is no value.
  const std::string& String(const std::string& name) const;
  // The typed value; crashes when there is none (check HasValue for flags
  // without a default).
  int64_t Int(const std::string& name) const;
  double Double(const std::string& name) const;
  bool Bool(const std::string& name) const;
  const std::vector<int64_t>& IntList(const std::string& name) const;
  // "--name=value" for each flag of `group` that IsSet, in the group's
  // order: how a launcher passes on what the user chose, and nothing else.
  std::vector<std::string> ArgsFor(const FlagGroup& group) const;

 private:
  friend class FlagTable;
  struct Value {
    FlagType type = FlagType::kString;
    bool set = false, has_value = false;
    std::string text;
    int64_t int_value = 0;
    double double_value = 0;
    bool bool_value = false;
    std::vector<int64_t> list;
  };
  const Value& Get(const std::string& name, FlagType type) const;
  std::map<std::string, Value> values_;
};

class FlagTable {
 public:
  // `usage`: what follows "usage: " in --help (e.g. "strata-worker
  // [flags]"); `summary`: one paragraph. Adds --config. A name declared
  // twice, or a default that its own declaration refuses, crashes: the
  // table is code.
  FlagTable(std::string usage, std::string summary, std::vector<FlagGroup> groups);

  // `args` without the program (and subcommand) name.
  absl::StatusOr<ParsedFlags> Parse(const std::vector<std::string>& args) const;

  // The --help text, every flag with its type, range and default.
  std::string Help() const;

  const std::string& summary() const { return summary_; }
  const std::vector<FlagGroup>& groups() const { return groups_; }

 private:
  // Checks `text` against the declaration and fills the typed value;
  // `where` ends the message (the config file a value came from).
  static absl::Status ParseValue(const Flag& f, const std::string& text, const std::string& where,
                                 ParsedFlags::Value* v);
  const Flag* Find(const std::string& name) const;
  absl::Status ReadConfig(const std::string& path, std::map<std::string, std::string>* given,
                          std::map<std::string, std::string>* from) const;

  std::string usage_, summary_;
  std::vector<FlagGroup> groups_;
};

// "--help" or "-h" among `args`: the binary prints Help() and exits 0.
bool WantsHelp(const std::vector<std::string>& args);

}  // namespace strata::base

#endif  // STRATA_BASE_FLAGS_H_
