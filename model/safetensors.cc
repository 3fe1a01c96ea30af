#include "model/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"

namespace strata::model {
namespace {

using Json = nlohmann::json;

// Strict UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF).
bool IsValidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    uint8_t c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    p += n + 1;
  }
  return true;
}

absl::Status Bad(absl::string_view label, absl::string_view tensor, absl::string_view rule) {
  if (tensor.empty()) return absl::InvalidArgumentError(absl::StrCat(label, ": ", rule));
  return absl::InvalidArgumentError(absl::StrCat(label, ": tensor \"", tensor, "\": ", rule));
}

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

int64_t ShapeElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<SafetensorsHeader> ParseSafetensors(absl::string_view file,
                                                   absl::string_view label) {
  if (file.size() < 8) {
    return Bad(label, "", absl::StrCat("file is ", file.size(),
                                       " bytes, shorter than the 8-byte header length"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[i]);
  if (n > kMaxSafetensorsHeaderBytes) {
    return Bad(label, "", absl::StrCat("header length ", n, " exceeds the limit of ",
                                       kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (n > file.size() - 8) {
    return Bad(label, "", absl::StrCat("header length ", n, " runs past the end of the ",
                                       file.size(), "-byte file"));
  }
  absl::string_view text = file.substr(8, n);
  if (!IsValidUtf8(text)) return Bad(label, "", "header is not valid UTF-8");

  // nlohmann keeps the last of repeated keys silently; a parser callback
  // sees every top-level key so repeats are caught.
  std::set<std::string> seen_keys;
  std::string repeated;
  Json::parser_callback_t on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(key).second && repeated.empty()) repeated = key;
    }
    return true;
  };
  Json j = Json::parse(text.begin(), text.end(), on_event, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(label, "", "header is not valid JSON");
  if (!j.is_object()) return Bad(label, "", "header must be a JSON object");
  if (!repeated.empty()) return Bad(label, repeated, "name is repeated in the header");

  SafetensorsHeader header;
  header.header_bytes = n;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const Json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Bad(label, "", "__metadata__ must be an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          return Bad(label, "", absl::StrCat("__metadata__ value \"", m.key(), "\" must be a string"));
        }
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (name.empty()) return Bad(label, "", "a tensor has an empty name");
    if (!v.is_object()) return Bad(label, name, "entry must be an object");
    TensorEntry e;
    e.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) return Bad(label, name, "dtype missing or not a string");
    auto dtype = ParseDType(dt->get<std::string>());
    if (!dtype.ok()) return Bad(label, name, dtype.status().message());
    e.dtype = *dtype;
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) return Bad(label, name, "shape missing or not a list");
    if (sh->size() > 8) return Bad(label, name, "shape has more than 8 dimensions");
    uint64_t elements = 1;
    for (const Json& d : *sh) {
      if (!d.is_number_unsigned()) {
        return Bad(label, name, "shape entries must be non-negative integers");
      }
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || MulOverflows(elements, dim, &elements)) {
        return Bad(label, name, "shape is too large");
      }
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      return Bad(label, name, "data_offsets must be a list of two non-negative integers");
    }
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.begin > e.end) {
      return Bad(label, name, absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] are reversed"));
    }
    uint64_t bytes;
    if (MulOverflows(elements, static_cast<uint64_t>(DTypeSize(e.dtype)), &bytes) ||
        bytes != e.end - e.begin) {
      return Bad(label, name,
                 absl::StrCat("shape ", ShapeString(e.shape), " of ", DTypeName(e.dtype),
                              " needs ", elements * DTypeSize(e.dtype), " bytes but data_offsets [",
                              e.begin, ", ", e.end, "] hold ", e.end - e.begin));
    }
    header.tensors.push_back(std::move(e));
  }

  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorEntry& a, const TensorEntry& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t expected = 0;
  for (const TensorEntry& e : header.tensors) {
    if (e.begin < expected) {
      return Bad(label, e.name, absl::StrCat("data_offsets [", e.begin, ", ", e.end,
                                             "] overlap the previous tensor, which ends at ",
                                             expected));
    }
    if (e.begin > expected) {
      return Bad(label, e.name, absl::StrCat("data_offsets start at ", e.begin,
                                             ", leaving a hole after byte ", expected));
    }
    expected = e.end;
  }
  const uint64_t data_bytes = file.size() - 8 - n;
  if (expected != data_bytes) {
    return Bad(label, "", absl::StrCat("tensors end at byte ", expected, " of the data section, but it holds ",
                                       data_bytes, " bytes"));
  }
  return header;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(FileSystem* fs,
                                                                       const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  STRATA_ASSIGN_OR_RETURN(f->region_, fs->MapFile(path));
  absl::string_view bytes(reinterpret_cast<const char*>(f->region_->data()), f->region_->size());
  STRATA_ASSIGN_OR_RETURN(f->header_, ParseSafetensors(bytes, path));
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) {
    f->index_.emplace(f->header_.tensors[i].name, i);
  }
  return f;
}

absl::StatusOr<TensorView> SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  }
  const TensorEntry& e = header_.tensors[it->second];
  TensorView v;
  v.name = e.name;
  v.dtype = e.dtype;
  v.shape = e.shape;
  v.data = region_->data() + 8 + header_.header_bytes + e.begin;
  v.num_bytes = e.end - e.begin;
  return v;
}

std::string SafetensorsHeaderBytes(const std::vector<TensorSpec>& tensors,
                                   const std::map<std::string, std::string>& metadata) {
  Json j = Json::object();
  if (!metadata.empty()) j["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    const uint64_t bytes = t.NumBytes();
    j[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape},
                 {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = j.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

absl::Status WriteSafetensors(
    FileSystem* fs, const std::string& path, const std::vector<TensorSpec>& tensors,
    const std::map<std::string, std::string>& metadata,
    const std::function<absl::Status(const TensorSpec&, std::string* bytes)>& fill) {
  std::set<std::string> names;
  for (const TensorSpec& t : tensors) {
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", t.name, "\" given twice"));
    }
  }
  STRATA_ASSIGN_OR_RETURN(auto file, fs->NewWritableFile(path));
  STRATA_RETURN_IF_ERROR(file->Append(SafetensorsHeaderBytes(tensors, metadata)));
  std::string buffer;
  for (const TensorSpec& t : tensors) {
    const uint64_t bytes = t.NumBytes();
    buffer.assign(bytes, '\0');
    STRATA_RETURN_IF_ERROR(fill(t, &buffer));
    if (buffer.size() != bytes) {
      return absl::InternalError(absl::StrCat(path, ": tensor \"", t.name, "\" filled with ",
                                              buffer.size(), " bytes, expected ", bytes));
    }
    STRATA_RETURN_IF_ERROR(file->Append(buffer));
  }
  return file->Close();
}

void AdviseWillNeed(const TensorView& t, int64_t row_begin, int64_t row_end, int64_t col_begin,
                    int64_t col_end) {
  if (t.data == nullptr || t.num_bytes == 0 || t.shape.empty()) return;
  const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
  const int64_t cols = t.shape.back();
  if (rows <= 0 || cols <= 0) return;
  const int64_t elem = static_cast<int64_t>(t.num_bytes) / (rows * cols);
  row_begin = std::clamp<int64_t>(row_begin, 0, rows);
  row_end = std::clamp<int64_t>(row_end, row_begin, rows);
  col_begin = std::clamp<int64_t>(col_begin, 0, cols);
  col_end = std::clamp<int64_t>(col_end, col_begin, cols);
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  auto advise = [&](int64_t begin, int64_t end) {  // byte offsets in the tensor
    if (end <= begin) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(t.data) + static_cast<uintptr_t>(begin);
    const uintptr_t b = reinterpret_cast<uintptr_t>(t.data) + static_cast<uintptr_t>(end);
    const uintptr_t start = a / page * page;
    madvise(reinterpret_cast<void*>(start), b - start, MADV_WILLNEED);
  };
  if (col_begin == 0 && col_end == cols) {
    advise(row_begin * cols * elem, row_end * cols * elem);
    return;
  }
  for (int64_t r = row_begin; r < row_end; ++r) advise((r * cols + col_begin) * elem, (r * cols + col_end) * elem);
}

}  // namespace strata::model
