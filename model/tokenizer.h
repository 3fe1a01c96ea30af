// Llama 3's tokenizer: byte-level BPE over 128,000 ranks plus 256 special
// tokens (ids 128000..128255), with tiktoken's pre-tokenization pattern
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// implemented by hand (RE2 has no lookahead) with Unicode letter, number and
// White_Space tables (model/unicode_tables.inc), then merges by rank with a
// heap (n log n in the length of a piece: a megabyte without whitespace is
// fine). Loads Hugging Face tokenizer.json or Meta's tokenizer.model.
#ifndef STRATA_MODEL_TOKENIZER_H_
#define STRATA_MODEL_TOKENIZER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/file_system.h"

namespace strata::model {

inline constexpr int32_t kBeginOfText = 128000;
inline constexpr int32_t kEndOfText = 128001;
inline constexpr int32_t kStartHeader = 128006;
inline constexpr int32_t kEndHeader = 128007;
inline constexpr int32_t kEndOfMessage = 128008;  // <|eom_id|>
inline constexpr int32_t kEndOfTurn = 128009;     // <|eot_id|>
inline constexpr int32_t kPythonTag = 128010;

// Splits text (valid UTF-8) into pieces as the pattern above does; exposed
// for tests.
std::vector<absl::string_view> PreTokenize(absl::string_view text);

class Tokenizer {
 public:
  // The folder's tokenizer.json, else its tokenizer.model; NOT_FOUND naming
  // both when neither is there.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(FileSystem* fs, const std::string& dir);
  // Hugging Face tokenizer.json (BPE model, byte-level vocabulary, Llama 3's
  // split pattern, merges in rank order).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJson(absl::string_view json);
  // tiktoken: one "base64-token rank" per line, ranks 0..N-1; the 256
  // special tokens of Llama 3.1 follow at N.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromTiktoken(absl::string_view text);

  // Asked between pieces of a long text (every kCancelCheckBytes of it):
  // true ends the encoding with CANCELLED (the caller went away or its
  // deadline passed). Called on the encoding thread; may be empty.
  using Cancelled = std::function<bool()>;
  static constexpr size_t kCancelCheckBytes = 4096;

  // Encodes text; special-token strings in it are plain text.
  // INVALID_ARGUMENT for malformed UTF-8 (naming the byte offset).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text, const Cancelled& cancelled = {}) const;
  // Encodes text where special-token strings ("<|eot_id|>") become their
  // ids. Linear in the text: a "<|" is matched against the special tokens
  // within the longest one's length only.
  absl::StatusOr<std::vector<int32_t>> EncodeWithSpecialTokens(absl::string_view text,
                                                               const Cancelled& cancelled = {}) const;
  // The bytes of the tokens (special tokens as their text). It may end in
  // the middle of a character; INVALID_ARGUMENT for ids outside the vocabulary.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> SpecialTokenId(absl::string_view text) const;
  const std::string& TokenBytes(int32_t id) const { return tokens_[id]; }
  bool IsSpecial(int32_t id) const { return id >= num_ranks_; }

 private:
  Tokenizer() = default;
  absl::Status Finish();  // builds the rank table and checks the vocabulary
  void EncodePiece(absl::string_view piece, std::vector<int32_t>* out) const;
  // Pre-tokenizes and encodes `text` (valid UTF-8) onto `out`, asking
  // `cancelled` every kCancelCheckBytes; `*checked` carries the bytes since
  // the last question across calls.
  absl::Status EncodePlain(absl::string_view text, const Cancelled& cancelled, size_t* checked,
                           std::vector<int32_t>* out) const;
  int32_t Rank(absl::string_view bytes) const;

  std::vector<std::string> tokens_;  // bytes per id (special tokens: their text)
  int32_t num_ranks_ = 0;            // ids below are BPE ranks
  absl::flat_hash_map<std::string, int32_t> ranks_;  // looked up by string_view
  absl::flat_hash_map<std::string, int32_t> specials_;  // looked up by string_view
  size_t max_special_length_ = 0;                        // bytes of the longest special token
};

// Streaming detokenization: Push returns the text that is complete so far.
// A character split across tokens is held until its last byte arrives, so
// the concatenated deltas equal the full decode and never contain U+FFFD
// for valid text; bytes that can never become valid UTF-8 come out as
// U+FFFD (deltas are always valid UTF-8).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}
  absl::StatusOr<std::string> Push(int32_t id);
  // The held bytes, as U+FFFD (end of stream in the middle of a character).
  std::string Flush();

 private:
  std::string Drain(bool final);
  const Tokenizer* tokenizer_;
  std::string pending_;
};

// All of `ids` as text through an IncrementalDecoder (always valid UTF-8:
// a character cut off at the end comes out as U+FFFD); INVALID_ARGUMENT
// "ids[i]: ..." for an id outside the vocabulary.
absl::StatusOr<std::string> DecodeToText(const Tokenizer& tokenizer, const std::vector<int32_t>& ids);

// Llama 3.1 chat format.
struct ChatMessage {
  std::string role;  // system | user | assistant | ipython
  std::string content;
};

// <|begin_of_text|> then <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
// per message, ending with the assistant header when `add_generation_prompt`.
// INVALID_ARGUMENT for an unknown role or bad UTF-8 (naming the message).
// `cancelled` as for Tokenizer::Encode.
absl::StatusOr<std::vector<int32_t>> ApplyChatTemplate(const Tokenizer& tokenizer,
                                                       const std::vector<ChatMessage>& messages,
                                                       bool add_generation_prompt = true,
                                                       const Tokenizer::Cancelled& cancelled = {});

// The ids that end a chat reply: <|end_of_text|>, <|eom_id|>, <|eot_id|>.
std::vector<int32_t> ChatStopIds();

// Length of the longest prefix of `bytes` that is complete, valid UTF-8.
size_t ValidUtf8Prefix(absl::string_view bytes);

}  // namespace strata::model

#endif  // STRATA_MODEL_TOKENIZER_H_
