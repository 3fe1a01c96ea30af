// Safetensors files: a validating, zero-copy reader over an mmap, and a
// streaming writer. Format: 8-byte little-endian header length N, N bytes of
// UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]}, optional
// "__metadata__"}, then the tensor bytes. Checkpoint files are untrusted:
// every rule is checked before any tensor byte is used.
#ifndef STRATA_MODEL_SAFETENSORS_H_
#define STRATA_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/dtype.h"
#include "model/file_system.h"

namespace strata::model {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull * 1000 * 1000;

// Elements of a shape (1 for a scalar), and its spelling "[4096, 128256]".
int64_t ShapeElements(const std::vector<int64_t>& shape);
std::string ShapeString(const std::vector<int64_t>& shape);

// A tensor's place in the file: bytes [begin, end) after the header.
struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// The parsed, validated header of one safetensors file.
struct SafetensorsHeader {
  uint64_t header_bytes = 0;  // N, the JSON length
  std::vector<TensorEntry> tensors;  // in file order
  std::map<std::string, std::string> metadata;
};

// Validates `file` (the whole file's bytes) and returns its header. `label`
// names the file in error messages. Rules: at least 8 bytes; N at most
// kMaxSafetensorsHeaderBytes and within the file; the header valid UTF-8
// JSON object; known dtypes; non-negative shapes whose element count times
// the dtype size equals end - begin; byte ranges contiguous from 0 with no
// holes or overlaps, the last ending at the end of the file; no repeated
// tensor names.
absl::StatusOr<SafetensorsHeader> ParseSafetensors(absl::string_view file,
                                                   absl::string_view label);

// A read-only view of one tensor inside a mapped file.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // unaligned; dtype-sized elements
  uint64_t num_bytes = 0;

  int64_t NumElements() const { return ShapeElements(shape); }
  std::string ShapeString() const { return model::ShapeString(shape); }
};

// Asks the kernel to read rows [row_begin, row_end) x columns [col_begin,
// col_end) of a 2-D tensor (1-D: one row) ahead of use, and nothing else:
// checkpoint mappings are MADV_RANDOM, so without this each page would be
// read on its own fault. Whole rows are one range; a column slice is one
// range per row. Ranges are clamped to the tensor.
void AdviseWillNeed(const TensorView& tensor, int64_t row_begin, int64_t row_end, int64_t col_begin,
                    int64_t col_end);

// One mapped, validated safetensors file. Views stay valid while it lives.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(FileSystem* fs,
                                                               const std::string& path);
  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  // NOT_FOUND when absent.
  absl::StatusOr<TensorView> Find(absl::string_view name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::unique_ptr<ReadOnlyRegion> region_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

// Writes one safetensors file. Tensors are laid out in the given order; the
// header is written first, then `fill` is called once per tensor with a
// buffer of exactly its byte size to fill.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  uint64_t NumBytes() const { return static_cast<uint64_t>(ShapeElements(shape) * DTypeSize(dtype)); }
};
absl::Status WriteSafetensors(
    FileSystem* fs, const std::string& path, const std::vector<TensorSpec>& tensors,
    const std::map<std::string, std::string>& metadata,
    const std::function<absl::Status(const TensorSpec&, std::string* bytes)>& fill);

// Builds the bytes of a safetensors header (length prefix included), padded
// with spaces to a multiple of 8. Exposed for tests that forge files.
std::string SafetensorsHeaderBytes(const std::vector<TensorSpec>& tensors,
                                   const std::map<std::string, std::string>& metadata);

}  // namespace strata::model

#endif  // STRATA_MODEL_SAFETENSORS_H_
