// The file-system seam (after LevelDB's Env): the weight loader and model
// writer touch files only through FileSystem, so tests swap in an in-memory
// one or a fault-injecting wrapper.
#ifndef STRATA_MODEL_FILE_SYSTEM_H_
#define STRATA_MODEL_FILE_SYSTEM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace strata::model {

// Read-only bytes of one whole file (an mmap for the POSIX file system).
// The bytes stay valid for the object's lifetime. Thread-safe to read.
class ReadOnlyRegion {
 public:
  virtual ~ReadOnlyRegion() = default;
  virtual const uint8_t* data() const = 0;
  virtual uint64_t size() const = 0;
};

// A file being written sequentially. Close() must be called and checked; the
// destructor of an unclosed file discards nothing but reports nothing either.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual absl::Status Append(absl::string_view bytes) = 0;
  virtual absl::Status Close() = 0;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Maps the whole file read-only. Empty files give an empty region.
  virtual absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> MapFile(const std::string& path) = 0;
  // Reads a whole file; fails with RESOURCE_EXHAUSTED past `max_bytes`.
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) = 0;
  virtual bool Exists(const std::string& path) = 0;
  // Canonical absolute path with every symbolic link resolved.
  virtual absl::StatusOr<std::string> RealPath(const std::string& path) = 0;
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) = 0;
  // Creates the folder and its parents; succeeds when it exists already.
  virtual absl::Status CreateDirs(const std::string& path) = 0;
};

// The real file system. Thread-safe; never deleted.
FileSystem* PosixFileSystem();

// Files held in memory, for tests. Paths are plain strings; RealPath is the
// identity unless a link was added with AddSymlink. Thread-safe.
class InMemoryFileSystem : public FileSystem {
 public:
  void SetFile(const std::string& path, std::string contents);
  // `path` resolves to `target` in RealPath and reads as target's contents.
  void AddSymlink(const std::string& path, const std::string& target);
  std::string Contents(const std::string& path);

  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> MapFile(const std::string& path) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override;
  bool Exists(const std::string& path) override;
  absl::StatusOr<std::string> RealPath(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  absl::Status CreateDirs(const std::string& path) override;

 private:
  std::string Resolve(const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const std::string>> files_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> links_ ABSL_GUARDED_BY(mu_);
};

// "dir" + "/" + "name", without doubling the slash.
std::string JoinPath(absl::string_view dir, absl::string_view name);

}  // namespace strata::model

#endif  // STRATA_MODEL_FILE_SYSTEM_H_
