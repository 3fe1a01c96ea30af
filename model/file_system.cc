#include "model/file_system.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace strata::model {
namespace {

absl::Status ErrnoError(absl::string_view what, const std::string& path, int err) {
  std::string message = absl::StrCat(what, " ", path, ": ", strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

class MmapRegion : public ReadOnlyRegion {
 public:
  MmapRegion(void* addr, uint64_t size) : addr_(addr), size_(size) {}
  ~MmapRegion() override {
    if (addr_ != nullptr) munmap(addr_, size_);
  }
  MmapRegion(const MmapRegion&) = delete;
  MmapRegion& operator=(const MmapRegion&) = delete;

  const uint8_t* data() const override { return static_cast<const uint8_t*>(addr_); }
  uint64_t size() const override { return size_; }

 private:
  void* addr_;
  uint64_t size_;
};

class StringRegion : public ReadOnlyRegion {
 public:
  explicit StringRegion(std::shared_ptr<const std::string> s) : s_(std::move(s)) {}
  const uint8_t* data() const override { return reinterpret_cast<const uint8_t*>(s_->data()); }
  uint64_t size() const override { return s_->size(); }

 private:
  std::shared_ptr<const std::string> s_;
};

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) close(fd_);
  }
  absl::Status Append(absl::string_view bytes) override {
    const char* p = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
      ssize_t n = write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("cannot write", path_, errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }
  absl::Status Close() override {
    int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) return ErrnoError("cannot close", path_, errno);
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int fd_;
};

class Posix : public FileSystem {
 public:
  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> MapFile(const std::string& path) override {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("cannot open", path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
      int err = errno;
      close(fd);
      return ErrnoError("cannot stat", path, err);
    }
    if (!S_ISREG(st.st_mode)) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    void* addr = nullptr;
    if (size > 0) {
      addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (addr == MAP_FAILED) {
        int err = errno;
        close(fd);
        return ErrnoError("cannot mmap", path, err);
      }
      // No readahead: a worker touches only its own slices' pages (and asks
      // for them with AdviseWillNeed), never its neighbours'.
      madvise(addr, size, MADV_RANDOM);
    }
    close(fd);
    return std::unique_ptr<ReadOnlyRegion>(new MmapRegion(addr, size));
  }

  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    auto region = MapFile(path);
    if (!region.ok()) return region.status();
    if ((*region)->size() > max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(path, " is ", (*region)->size(),
                                                       " bytes, over the limit of ", max_bytes));
    }
    return std::string(reinterpret_cast<const char*>((*region)->data()), (*region)->size());
  }

  bool Exists(const std::string& path) override {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
  }

  absl::StatusOr<std::string> RealPath(const std::string& path) override {
    char buf[PATH_MAX];
    if (realpath(path.c_str(), buf) == nullptr) return ErrnoError("cannot resolve", path, errno);
    return std::string(buf);
  }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError("cannot create", path, errno);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  absl::Status CreateDirs(const std::string& path) override {
    if (path.empty()) return absl::InvalidArgumentError("empty folder name");
    std::string partial;
    size_t pos = 0;
    while (pos != std::string::npos) {
      pos = path.find('/', pos + 1);
      partial = path.substr(0, pos);
      if (partial.empty()) continue;
      if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
        return ErrnoError("cannot create folder", partial, errno);
      }
    }
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a folder"));
    }
    return absl::OkStatus();
  }
};

class MemoryWritableFile : public WritableFile {
 public:
  MemoryWritableFile(InMemoryFileSystem* fs, std::string path) : fs_(fs), path_(std::move(path)) {}
  absl::Status Append(absl::string_view bytes) override {
    buffer_.append(bytes.data(), bytes.size());
    return absl::OkStatus();
  }
  absl::Status Close() override {
    fs_->SetFile(path_, std::move(buffer_));
    return absl::OkStatus();
  }

 private:
  InMemoryFileSystem* fs_;
  std::string path_;
  std::string buffer_;
};

}  // namespace

FileSystem* PosixFileSystem() {
  static FileSystem* fs = new Posix();
  return fs;
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

void InMemoryFileSystem::SetFile(const std::string& path, std::string contents) {
  absl::MutexLock lock(&mu_);
  files_[path] = std::make_shared<const std::string>(std::move(contents));
}

void InMemoryFileSystem::AddSymlink(const std::string& path, const std::string& target) {
  absl::MutexLock lock(&mu_);
  links_[path] = target;
}

std::string InMemoryFileSystem::Contents(const std::string& path) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(Resolve(path));
  return it == files_.end() ? std::string() : *it->second;
}

std::string InMemoryFileSystem::Resolve(const std::string& path) {
  auto it = links_.find(path);
  return it == links_.end() ? path : it->second;
}

absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> InMemoryFileSystem::MapFile(
    const std::string& path) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(Resolve(path));
  if (it == files_.end()) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  return std::unique_ptr<ReadOnlyRegion>(new StringRegion(it->second));
}

absl::StatusOr<std::string> InMemoryFileSystem::ReadFile(const std::string& path,
                                                         uint64_t max_bytes) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(Resolve(path));
  if (it == files_.end()) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  if (it->second->size() > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(path, " is over the limit of ", max_bytes));
  }
  return *it->second;
}

bool InMemoryFileSystem::Exists(const std::string& path) {
  absl::MutexLock lock(&mu_);
  if (files_.count(Resolve(path)) > 0) return true;
  // A folder exists when some file lies under it.
  const std::string prefix = path.back() == '/' ? path : path + "/";
  auto it = files_.lower_bound(prefix);
  return it != files_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

absl::StatusOr<std::string> InMemoryFileSystem::RealPath(const std::string& path) {
  absl::MutexLock lock(&mu_);
  return Resolve(path);
}

absl::StatusOr<std::unique_ptr<WritableFile>> InMemoryFileSystem::NewWritableFile(
    const std::string& path) {
  return std::unique_ptr<WritableFile>(new MemoryWritableFile(this, path));
}

absl::Status InMemoryFileSystem::CreateDirs(const std::string& path) { return absl::OkStatus(); }

}  // namespace strata::model
