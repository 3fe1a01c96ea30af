#include "model/tokenizer.h"

#include <algorithm>
#include <queue>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace strata::model {
namespace {

struct CodeRange {
  uint32_t first, last;
};
#include "model/unicode_tables.inc"

template <size_t N>
bool InRanges(const CodeRange (&ranges)[N], uint32_t cp) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (ranges[mid].last < cp) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < N && ranges[lo].first <= cp;
}

// Classes of the pattern, with an ASCII fast path.
enum : uint8_t { kLetter = 1, kNumber = 2, kSpace = 4 };

struct AsciiTable {
  uint8_t cls[128];
  AsciiTable() {
    for (int c = 0; c < 128; ++c) {
      cls[c] = 0;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) cls[c] |= kLetter;
      if (c >= '0' && c <= '9') cls[c] |= kNumber;
      if ((c >= 9 && c <= 13) || c == ' ') cls[c] |= kSpace;
    }
  }
};

uint8_t Classify(uint32_t cp) {
  static const AsciiTable ascii;
  if (cp < 128) return ascii.cls[cp];
  uint8_t c = 0;
  if (InRanges(kLetterRanges, cp)) c |= kLetter;
  if (InRanges(kNumberRanges, cp)) c |= kNumber;
  if (InRanges(kWhiteSpaceRanges, cp)) c |= kSpace;
  return c;
}

// The length of the UTF-8 character a byte starts (1 to 4), or 0 for a
// byte that cannot start one.
size_t Utf8Length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

// Decodes one UTF-8 character at s[i]; returns its length, or 0 when the
// bytes there are not a valid (shortest-form, non-surrogate) character.
size_t DecodeUtf8(absl::string_view s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  const size_t n = Utf8Length(c);
  if (n == 0) return 0;
  if (n == 1) {
    *cp = c;
    return 1;
  }
  uint32_t v = c & (0x7f >> n);  // the lead byte's payload bits
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    v = (v << 6) | (b(i + k) & 0x3f);
  }
  if ((n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10ffff)) || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return n;
}

absl::Status CheckUtf8(absl::string_view s) {
  const size_t valid = ValidUtf8Prefix(s);
  if (valid != s.size()) return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 at byte ", valid));
  return absl::OkStatus();
}

// GPT-2's printable character for each byte, inverted.
std::unordered_map<uint32_t, uint8_t> ByteLevelDecoder() {
  std::vector<int> bs;
  for (int b = 33; b <= 126; ++b) bs.push_back(b);
  for (int b = 161; b <= 172; ++b) bs.push_back(b);
  for (int b = 174; b <= 255; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  std::unordered_map<uint32_t, uint8_t> m;
  for (size_t i = 0; i < bs.size(); ++i) m[static_cast<uint32_t>(cs[i])] = static_cast<uint8_t>(bs[i]);
  return m;
}

constexpr char kLlama3Pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

std::vector<std::string> Llama31SpecialTokens() {
  std::vector<std::string> s = {"<|begin_of_text|>",        "<|end_of_text|>",      "<|reserved_special_token_0|>",
                                "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                                "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                                "<|eom_id|>",                  "<|eot_id|>",           "<|python_tag|>"};
  for (int i = 3; s.size() < 256; ++i) s.push_back(absl::StrCat("<|reserved_special_token_", i, "|>"));
  return s;
}

constexpr uint64_t kMaxTokenizerBytes = 64ull << 20;

}  // namespace

std::vector<absl::string_view> PreTokenize(absl::string_view text) {
  // Code points with their byte offsets (the caller checked the UTF-8).
  std::vector<uint32_t> cps;
  std::vector<uint8_t> cls;
  std::vector<size_t> at;
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0xfffd;
    size_t n = DecodeUtf8(text, i, &cp);
    if (n == 0) n = 1;  // not reached for checked text
    cps.push_back(cp);
    cls.push_back(Classify(cp));
    at.push_back(i);
    i += n;
  }
  const size_t n = cps.size();
  at.push_back(text.size());
  const auto letter = [&](size_t k) { return (cls[k] & kLetter) != 0; };
  const auto number = [&](size_t k) { return (cls[k] & kNumber) != 0; };
  const auto space = [&](size_t k) { return (cls[k] & kSpace) != 0; };
  const auto other = [&](size_t k) { return (cls[k] & (kLetter | kNumber | kSpace)) == 0; };
  const auto newline = [&](size_t k) { return cps[k] == '\r' || cps[k] == '\n'; };
  const auto lower = [&](size_t k) -> uint32_t {
    const uint32_t c = cps[k];
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17f) return 's';  // LATIN SMALL LETTER LONG S folds to s
    if (c == 0x212a) return 'k';  // KELVIN SIGN folds to k
    return c;
  };
  std::vector<absl::string_view> out;
  size_t i = 0;
  while (i < n) {
    size_t end = 0;
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (cps[i] == '\'' && i + 1 < n) {
      const uint32_t a = lower(i + 1);
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        end = i + 2;
      } else if (i + 2 < n) {
        const uint32_t b = lower(i + 2);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) end = i + 3;
      }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (end == 0) {
      size_t j = 0;
      if (letter(i)) {
        j = i;
      } else if (!newline(i) && !number(i) && i + 1 < n && letter(i + 1)) {
        j = i + 1;
      }
      if (j != 0 || letter(i)) {
        while (j < n && letter(j)) ++j;
        end = j;
      }
    }
    // \p{N}{1,3}
    if (end == 0 && number(i)) {
      end = i + 1;
      while (end < n && end < i + 3 && number(end)) ++end;
    }
    // ' '?[^\s\p{L}\p{N}]+[\r\n]*
    if (end == 0) {
      size_t j = i;
      if (cps[i] == ' ' && i + 1 < n && other(i + 1)) j = i + 1;
      if (other(j)) {
        while (j < n && other(j)) ++j;
        while (j < n && newline(j)) ++j;
        end = j;
      }
    }
    if (end == 0) {
      // Whitespace: i starts a run of it.
      size_t e = i;
      while (e < n && space(e)) ++e;
      // \s*[\r\n]+ : through the run's last newline.
      size_t last_nl = n;
      for (size_t k = i; k < e; ++k) {
        if (newline(k)) last_nl = k;
      }
      if (last_nl != n) {
        end = last_nl + 1;
      } else if (e == n) {
        end = e;  // \s+(?!\S) at the end of the text
      } else if (e - i >= 2) {
        end = e - 1;  // \s+(?!\S): leave the last space to the next word
      } else {
        end = e;  // \s+
      }
    }
    out.push_back(text.substr(at[i], at[end] - at[i]));
    i = end;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(FileSystem* fs, const std::string& dir) {
  const std::string json = dir + "/tokenizer.json", tiktoken = dir + "/tokenizer.model";
  if (fs->Exists(json)) {
    auto text = fs->ReadFile(json, kMaxTokenizerBytes);
    if (!text.ok()) return text.status();
    auto t = FromTokenizerJson(*text);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(json, ": ", t.status().message()));
    return t;
  }
  if (fs->Exists(tiktoken)) {
    auto text = fs->ReadFile(tiktoken, kMaxTokenizerBytes);
    if (!text.ok()) return text.status();
    auto t = FromTiktoken(*text);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(tiktoken, ": ", t.status().message()));
    return t;
  }
  return absl::NotFoundError(absl::StrCat(dir, " has neither tokenizer.json nor tokenizer.model"));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromTokenizerJson(absl::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  const auto& model = j["model"];
  if (!model.is_object() || model.value("type", "") != "BPE" || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("model: expected a BPE model with a vocab object");
  }
  // The pre-tokenizer must be Llama 3's split (the only one implemented).
  const std::string dumped = j["pre_tokenizer"].dump();
  if (dumped.find(nlohmann::json(kLlama3Pattern).dump()) == std::string::npos) {
    return absl::InvalidArgumentError("pre_tokenizer: only Llama 3's split pattern is supported");
  }
  static const auto byte_of = ByteLevelDecoder();
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  const auto& vocab = model["vocab"];
  t->tokens_.resize(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it->is_number_integer()) return absl::InvalidArgumentError(absl::StrCat("vocab: \"", it.key(), "\" has no id"));
    const int64_t id = it->get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(vocab.size()) || seen[id]) {
      return absl::InvalidArgumentError(absl::StrCat("vocab: ids must be 0..", vocab.size() - 1, " once each; got ", id));
    }
    seen[id] = true;
    std::string bytes;
    const std::string& key = it.key();
    for (size_t i = 0; i < key.size();) {
      uint32_t cp;
      const size_t n = DecodeUtf8(key, i, &cp);
      auto b = n == 0 ? byte_of.end() : byte_of.find(cp);
      if (b == byte_of.end()) {
        return absl::InvalidArgumentError(absl::StrCat("vocab: token ", id, " is not in the byte-level alphabet"));
      }
      bytes.push_back(static_cast<char>(b->second));
      i += n;
    }
    t->tokens_[id] = std::move(bytes);
  }
  t->num_ranks_ = static_cast<int32_t>(t->tokens_.size());
  // Merges must be in rank order: the token each merge makes has a larger
  // id than the one before (ranks are ids, as in tiktoken).
  if (model["merges"].is_array()) {
    int64_t last = -1;
    for (const auto& m : model["merges"]) {
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos) return absl::InvalidArgumentError("merges: an entry without a space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        return absl::InvalidArgumentError("merges: entries must be \"a b\" or [a, b]");
      }
      auto it = vocab.find(a + b);
      if (it == vocab.end()) return absl::InvalidArgumentError(absl::StrCat("merges: \"", a, b, "\" is not in the vocab"));
      const int64_t id = it->get<int64_t>();
      if (id < last) {  // several merges may make the same token
        return absl::InvalidArgumentError("merges: merge order differs from token ids; only rank-ordered "
                                          "vocabularies (tiktoken-derived, like Llama 3's) are supported");
      }
      last = id;
    }
  }
  for (const auto& added : j["added_tokens"]) {
    if (!added.is_object() || !added["id"].is_number_integer() || !added["content"].is_string()) {
      return absl::InvalidArgumentError("added_tokens: entries need an integer id and a content string");
    }
    const int64_t id = added["id"].get<int64_t>();
    if (id < t->num_ranks_ || id > (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat("added_tokens: id ", id, " overlaps the vocab or is too large"));
    }
    if (static_cast<int64_t>(t->tokens_.size()) <= id) t->tokens_.resize(id + 1);
    t->tokens_[id] = added["content"].get<std::string>();
    t->specials_[t->tokens_[id]] = static_cast<int32_t>(id);
  }
  if (auto s = t->Finish(); !s.ok()) return s;
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromTiktoken(absl::string_view text) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    int64_t rank = -1;
    std::string bytes;
    if (sp == absl::string_view::npos || !absl::SimpleAtoi(line.substr(sp + 1), &rank) ||
        !absl::Base64Unescape(line.substr(0, sp), &bytes) || bytes.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_no, " is not \"base64 rank\""));
    }
    if (rank != static_cast<int64_t>(t->tokens_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": rank ", rank, ", expected ", t->tokens_.size()));
    }
    t->tokens_.push_back(std::move(bytes));
  }
  t->num_ranks_ = static_cast<int32_t>(t->tokens_.size());
  if (t->num_ranks_ == 0) return absl::InvalidArgumentError("no ranks");
  for (const std::string& s : Llama31SpecialTokens()) {
    t->specials_[s] = static_cast<int32_t>(t->tokens_.size());
    t->tokens_.push_back(s);
  }
  if (auto s = t->Finish(); !s.ok()) return s;
  return t;
}

absl::Status Tokenizer::Finish() {
  for (const auto& [text, id] : specials_) max_special_length_ = std::max(max_special_length_, text.size());
  ranks_.reserve(num_ranks_ * 2);
  for (int32_t id = 0; id < num_ranks_; ++id) {
    if (!ranks_.emplace(tokens_[id], id).second) {
      return absl::InvalidArgumentError(absl::StrCat("token ", id, " repeats an earlier token's bytes"));
    }
  }
  for (int b = 0; b < 256; ++b) {
    if (!ranks_.count(std::string(1, static_cast<char>(b)))) {
      return absl::InvalidArgumentError(absl::StrCat("the vocabulary lacks the single byte ", b));
    }
  }
  return absl::OkStatus();
}

int32_t Tokenizer::Rank(absl::string_view bytes) const {
  auto it = ranks_.find(bytes);
  return it == ranks_.end() ? -1 : it->second;
}

void Tokenizer::EncodePiece(absl::string_view piece, std::vector<int32_t>* out) const {
  if (const int32_t whole = Rank(piece); whole >= 0) {
    out->push_back(whole);
    return;
  }
  // Parts are byte ranges [start[i], start[next[i]]); merge the adjacent pair
  // of lowest rank (leftmost first) until none is in the vocabulary.
  const int m = static_cast<int>(piece.size());
  std::vector<int> next(m), prev(m), end(m);
  std::vector<bool> alive(m, true);
  for (int i = 0; i < m; ++i) {
    next[i] = i + 1 < m ? i + 1 : -1;
    prev[i] = i - 1;
    end[i] = i + 1;
  }
  struct Cand {
    int32_t rank;
    int left;
    int right_end;  // end of the right part when the pair was formed
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int left) {
    const int right = next[left];
    if (left < 0 || right < 0) return;
    const int32_t r = Rank(piece.substr(left, end[right] - left));
    if (r >= 0) heap.push({r, left, end[right]});
  };
  for (int i = 0; i + 1 < m; ++i) push(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int right = alive[c.left] ? next[c.left] : -1;
    if (right < 0 || end[right] != c.right_end) continue;  // stale
    end[c.left] = end[right];
    alive[right] = false;
    next[c.left] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.left;
    if (prev[c.left] >= 0) push(prev[c.left]);
    push(c.left);
  }
  for (int i = 0; i >= 0; i = next[i]) out->push_back(Rank(piece.substr(i, end[i] - i)));
}

absl::Status Tokenizer::EncodePlain(absl::string_view text, const Cancelled& cancelled, size_t* checked,
                                    std::vector<int32_t>* out) const {
  for (absl::string_view piece : PreTokenize(text)) {
    EncodePiece(piece, out);
    *checked += piece.size();
    if (*checked >= kCancelCheckBytes && cancelled) {
      *checked = 0;
      if (cancelled()) return absl::CancelledError("tokenizing was cancelled");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text, const Cancelled& cancelled) const {
  if (auto s = CheckUtf8(text); !s.ok()) return s;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  size_t checked = 0;
  if (absl::Status s = EncodePlain(text, cancelled, &checked, &ids); !s.ok()) return s;
  return ids;
}

// One pass over the text: at each "<|", the special token it starts (if
// any) ends within max_special_length_ bytes, so the search for its "|>"
// stops there. (It once searched the rest of the text and copied it, for
// every "<|": 320 KB of "<|" took 68 s.)
absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodeWithSpecialTokens(absl::string_view text,
                                                                        const Cancelled& cancelled) const {
  if (auto s = CheckUtf8(text); !s.ok()) return s;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  size_t start = 0, checked = 0, next_check = kCancelCheckBytes;
  size_t p = text.find("<|");
  while (true) {
    // The next "<|...|>" that names a special token.
    size_t found = absl::string_view::npos, found_len = 0;
    int32_t found_id = -1;
    for (; p != absl::string_view::npos; p = text.find("<|", p + 1)) {
      if (p >= next_check) {
        next_check = p + kCancelCheckBytes;
        if (cancelled && cancelled()) return absl::CancelledError("tokenizing was cancelled");
      }
      // "<|" + name + "|>": the "|>" ends within the longest token's length.
      const absl::string_view window = text.substr(p + 2, max_special_length_ > 2 ? max_special_length_ - 2 : 0);
      const size_t close = window.find("|>");
      if (close == absl::string_view::npos) continue;
      auto it = specials_.find(text.substr(p, close + 4));
      if (it != specials_.end()) {
        found = p;
        found_len = close + 4;
        found_id = it->second;
        break;
      }
    }
    const absl::string_view plain = text.substr(start, found == absl::string_view::npos ? absl::string_view::npos
                                                                                          : found - start);
    if (absl::Status s = EncodePlain(plain, cancelled, &checked, &ids); !s.ok()) return s;
    if (found == absl::string_view::npos) break;
    ids.push_back(found_id);
    start = found + found_len;
    p = text.find("<|", start);
  }
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size() || (IsSpecial(ids[i]) && tokens_[ids[i]].empty())) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: ", ids[i], " is outside the vocabulary [0, ",
                                                     vocab_size(), ")"));
    }
    out += tokens_[ids[i]];
  }
  return out;
}

std::optional<int32_t> Tokenizer::SpecialTokenId(absl::string_view text) const {
  auto it = specials_.find(text);
  if (it == specials_.end()) return std::nullopt;
  return it->second;
}

size_t ValidUtf8Prefix(absl::string_view bytes) {
  size_t i = 0;
  uint32_t cp;
  while (i < bytes.size()) {
    const size_t n = DecodeUtf8(bytes, i, &cp);
    if (n == 0) break;
    i += n;
  }
  return i;
}

std::string IncrementalDecoder::Drain(bool final) {
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    uint32_t cp;
    const size_t n = DecodeUtf8(pending_, i, &cp);
    if (n > 0) {
      out.append(pending_, i, n);
      i += n;
      continue;
    }
    // Not a complete character here: is it the start of one still arriving?
    const size_t need = Utf8Length(static_cast<uint8_t>(pending_[i]));
    bool prefix_ok = need > 1 && i + need > pending_.size();
    for (size_t k = i + 1; prefix_ok && k < pending_.size(); ++k) {
      prefix_ok = (static_cast<uint8_t>(pending_[k]) & 0xc0) == 0x80;
    }
    if (prefix_ok && !final) break;  // hold it for the next token
    out += "\xef\xbf\xbd";  // U+FFFD for a byte that cannot start a character
    ++i;
  }
  pending_.erase(0, i);
  return out;
}

absl::StatusOr<std::string> IncrementalDecoder::Push(int32_t id) {
  auto bytes = tokenizer_->Decode({id});
  if (!bytes.ok()) return bytes.status();
  pending_ += *bytes;
  return Drain(false);
}

std::string IncrementalDecoder::Flush() { return Drain(true); }

absl::StatusOr<std::string> DecodeToText(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  IncrementalDecoder dec(&tokenizer);
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto delta = dec.Push(ids[i]);
    if (!delta.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "]: ", ids[i], " is outside the vocabulary"));
    }
    text += *delta;
  }
  return text + dec.Flush();
}

absl::StatusOr<std::vector<int32_t>> ApplyChatTemplate(const Tokenizer& t, const std::vector<ChatMessage>& messages,
                                                       bool add_generation_prompt,
                                                       const Tokenizer::Cancelled& cancelled) {
  std::vector<int32_t> ids = {kBeginOfText};
  const std::vector<int32_t> blank_line = *t.Encode("\n\n");  // valid UTF-8: cannot fail
  auto header = [&](const std::string& role) -> absl::Status {
    ids.push_back(kStartHeader);
    auto r = t.Encode(role);
    if (!r.ok()) return r.status();
    ids.insert(ids.end(), r->begin(), r->end());
    ids.push_back(kEndHeader);
    ids.insert(ids.end(), blank_line.begin(), blank_line.end());
    return absl::OkStatus();
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "ipython") {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role: \"", m.role,
                                                     "\" is not system, user, assistant or ipython"));
    }
    if (auto s = header(m.role); !s.ok()) return s;
    auto content = t.Encode(m.content, cancelled);
    if (!content.ok() && content.status().code() == absl::StatusCode::kCancelled) return content.status();
    if (!content.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].content: ", content.status().message()));
    }
    ids.insert(ids.end(), content->begin(), content->end());
    ids.push_back(kEndOfTurn);
  }
  if (add_generation_prompt) {
    if (auto s = header("assistant"); !s.ok()) return s;
  }
  return ids;
}

std::vector<int32_t> ChatStopIds() { return {kEndOfText, kEndOfMessage, kEndOfTurn}; }

}  // namespace strata::model
