#include "worker/shm_exchange.h"

#include <emmintrin.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <new>
#include <random>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/rank_order_sum.h"

namespace strata::worker {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMagic = 0x5354524154415348ull;  // "STRATASH"
// How long a waiting rank polls its peers' sequence numbers before it
// sleeps: about a thread wake-up on a small VM.
constexpr auto kSpin = std::chrono::microseconds(20);
// How long one futex sleep lasts at most, and how often a waiting rank
// checks that its late peers' processes still exist.
constexpr auto kSleepSlice = std::chrono::milliseconds(20);
constexpr auto kLivenessEvery = std::chrono::milliseconds(100);

uint64_t PidNamespace() {
  struct stat st;
  return ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

long Futex(std::atomic<uint32_t>* word, int op, uint32_t value, const struct timespec* timeout) {
  return ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, timeout, nullptr, 0);
}

std::string ToStr(const std::vector<char>& v) { return std::string(v.begin(), v.end()); }
std::vector<char> ToVec(const std::string& s) { return std::vector<char>(s.begin(), s.end()); }

}  // namespace

struct alignas(64) RankCell {
  std::atomic<uint64_t> seq{0};  // the last call this rank published
  std::atomic<uint32_t> left{0};  // 1 once this rank's exchange is destroyed
  int32_t pid = 0;
  uint64_t pid_ns = 0;
};

struct ShmExchange::Header {
  uint64_t magic = 0;
  uint64_t token = 0;
  int32_t size = 0;
  alignas(64) std::atomic<uint32_t> bell{0};      // rung by every publish
  std::atomic<uint32_t> sleepers{0};              // ranks inside a futex wait
  RankCell ranks[kMaxRanks];
};

namespace {

size_t DataOffset() { return (sizeof(ShmExchange::Header) + 4095) / 4096 * 4096; }

}  // namespace

absl::StatusOr<std::unique_ptr<ShmExchange>> ShmExchange::Join(gloo::rendezvous::Store& store, const std::string& key,
                                                               int rank, int size,
                                                               std::chrono::milliseconds timeout) {
  if (size < 2 || size > kMaxRanks || rank < 0 || rank >= size) {
    return absl::NotFoundError(absl::StrCat("no shared-memory exchange for rank ", rank, " of ", size));
  }
  const size_t bytes = DataOffset() + 2 * static_cast<size_t>(size) * kSlotBytes;
  std::string name, why;
  uint64_t token = 0;
  void* base = nullptr;
  auto map = [&](int fd) -> bool {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) {
      why = absl::StrCat("mmap of ", bytes, " bytes: ", std::strerror(errno));
      return false;
    }
    base = p;
    return true;
  };
  auto unmap = [&] {
    if (base != nullptr) ::munmap(base, bytes);
    base = nullptr;
  };
  bool all = true;
  std::string refusal;
  try {
    if (rank == 0) {
      std::random_device rd;
      token = (static_cast<uint64_t>(rd()) << 32) ^ rd();
      name = absl::StrFormat("/strata-tp-%d-%016x", ::getpid(), token);
      const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd < 0) {
        why = absl::StrCat("shm_open(", name, "): ", std::strerror(errno));
      } else if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); err != 0) {
        // tmpfs without room would raise SIGBUS on first touch instead.
        why = absl::StrCat("reserving ", bytes, " bytes of ", name, ": ", std::strerror(err));
        ::close(fd);
      } else if (map(fd)) {
        Header* h = new (base) Header();
        h->magic = kMagic;
        h->token = token;
        h->size = size;
      }
      store.set(key + "/name", ToVec(base != nullptr ? absl::StrFormat("%s %016x", name, token) : std::string()));
    } else {
      const std::string posted = ToStr(store.get(key + "/name"));
      const size_t space = posted.find(' ');
      if (posted.empty() || space == std::string::npos) {
        why = "rank 0 has no segment";
      } else {
        name = posted.substr(0, space);
        token = std::strtoull(posted.c_str() + space + 1, nullptr, 16);
        const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
        struct stat st;
        if (fd < 0) {
          why = absl::StrCat("shm_open(", name, "): ", std::strerror(errno), " (another host?)");
        } else if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
          why = absl::StrCat(name, " is not ", bytes, " bytes");
          ::close(fd);
        } else if (map(fd)) {
          const Header* h = static_cast<const Header*>(base);
          if (h->magic != kMagic || h->token != token || h->size != size) {
            why = absl::StrCat(name, " is not this group's segment");
            unmap();
          }
        }
      }
    }
    if (base != nullptr) {
      RankCell& me = static_cast<Header*>(base)->ranks[rank];
      me.pid = static_cast<int32_t>(::getpid());
      me.pid_ns = PidNamespace();
    }
    store.set(absl::StrCat(key, "/ok/", rank), ToVec(base != nullptr ? std::string("1") : "0 " + why));
    for (int q = 0; q < size; ++q) {
      const std::string ok = ToStr(store.get(absl::StrCat(key, "/ok/", q)));
      if (ok != "1" && all) {
        all = false;
        refusal = absl::StrCat("rank ", q, ": ", ok.size() > 2 ? ok.substr(2) : ok);
      }
    }
  } catch (const std::exception& e) {
    unmap();
    if (rank == 0 && !name.empty()) ::shm_unlink(name.c_str());
    return absl::UnavailableError(absl::StrCat("joining the shared-memory exchange ", key, ": ", e.what()));
  }
  // Every rank has mapped it or given up: the name is not needed any more.
  if (rank == 0 && !name.empty()) ::shm_unlink(name.c_str());
  if (all) {
    // A peer's death is noticed by its pid, so the ranks must see each
    // other's pids; every rank reads the same cells, so all agree.
    const Header* h = static_cast<const Header*>(base);
    for (int q = 0; q < size && all; ++q) {
      if (h->ranks[q].pid_ns == 0 || h->ranks[q].pid_ns != h->ranks[0].pid_ns) {
        all = false;
        refusal = absl::StrCat("rank ", q, " is in another pid namespace, where its exit could not be seen");
      }
    }
  }
  if (!all) {
    unmap();
    return absl::NotFoundError(absl::StrCat("the ranks do not share memory (", refusal, ")"));
  }
  return std::unique_ptr<ShmExchange>(new ShmExchange(base, bytes, rank, size, timeout));
}

ShmExchange::ShmExchange(void* base, size_t bytes, int rank, int size, std::chrono::milliseconds timeout)
    : base_(base),
      bytes_(bytes),
      header_(static_cast<Header*>(base)),
      rank_(rank),
      size_(size),
      timeout_(timeout),
      parts_(static_cast<size_t>(size)) {}

ShmExchange::~ShmExchange() {
  // A peer waiting for this rank fails at once instead of at its timeout.
  header_->ranks[rank_].left.store(1, std::memory_order_seq_cst);
  header_->bell.fetch_add(1, std::memory_order_seq_cst);
  Futex(&header_->bell, FUTEX_WAKE, INT_MAX, nullptr);
  ::munmap(base_, bytes_);
}

float* ShmExchange::Slot(int parity, int rank) const {
  return reinterpret_cast<float*>(static_cast<char*>(base_) + DataOffset() +
                                  (static_cast<size_t>(parity) * size_ + rank) * kSlotBytes);
}

void ShmExchange::Publish(uint64_t call) {
  header_->ranks[rank_].seq.store(call, std::memory_order_seq_cst);
  header_->bell.fetch_add(1, std::memory_order_seq_cst);
  if (header_->sleepers.load(std::memory_order_seq_cst) > 0) Futex(&header_->bell, FUTEX_WAKE, INT_MAX, nullptr);
}

absl::Status ShmExchange::WaitForPeers(uint64_t call) {
  auto late = [&]() -> int {
    for (int q = 0; q < size_; ++q) {
      if (q != rank_ && header_->ranks[q].seq.load(std::memory_order_seq_cst) < call) return q;
    }
    return -1;
  };
  if (late() < 0) return absl::OkStatus();
  const auto start = Clock::now();
  while (Clock::now() - start < kSpin) {
    if (late() < 0) return absl::OkStatus();
    _mm_pause();
  }
  auto next_check = start + kLivenessEvery;
  for (;;) {
    // The bell is read before the sequence numbers: a publish after this
    // read changes it, so the futex wait below returns at once.
    const uint32_t rung = header_->bell.load(std::memory_order_seq_cst);
    int q = late();
    if (q < 0) return absl::OkStatus();
    header_->sleepers.fetch_add(1, std::memory_order_seq_cst);
    if (header_->bell.load(std::memory_order_seq_cst) == rung) {
      const auto slice = std::chrono::duration_cast<std::chrono::nanoseconds>(kSleepSlice).count();
      const struct timespec ts = {static_cast<time_t>(slice / 1000000000), static_cast<long>(slice % 1000000000)};
      Futex(&header_->bell, FUTEX_WAIT, rung, &ts);
    }
    header_->sleepers.fetch_sub(1, std::memory_order_seq_cst);
    q = late();
    if (q < 0) return absl::OkStatus();
    for (int p = 0; p < size_; ++p) {
      if (p != rank_ && header_->ranks[p].seq.load(std::memory_order_seq_cst) < call &&
          header_->ranks[p].left.load(std::memory_order_seq_cst) != 0) {
        return absl::UnavailableError(
            absl::StrCat("tensor-parallel rank ", p, " left the group before shared-memory call ", call));
      }
    }
    const auto now = Clock::now();
    if (now - start >= timeout_) {
      return absl::UnavailableError(absl::StrCat("tensor-parallel rank ", q, " did not reach shared-memory call ",
                                                 call, " within ", timeout_.count(), " ms"));
    }
    if (now >= next_check) {
      next_check = now + kLivenessEvery;
      for (int p = 0; p < size_; ++p) {
        const int32_t pid = header_->ranks[p].pid;
        if (p == rank_ || pid <= 0) continue;
        if (header_->ranks[p].seq.load(std::memory_order_seq_cst) >= call) continue;
        if (::kill(pid, 0) != 0 && errno == ESRCH) {
          return absl::UnavailableError(
              absl::StrCat("tensor-parallel rank ", p, " (pid ", pid, ") exited before shared-memory call ", call));
        }
      }
    }
  }
}

absl::Status ShmExchange::ExchangeWindow(const float* src, int64_t len, int* parity) {
  const uint64_t call = ++calls_;
  *parity = static_cast<int>(call & 1);
  if (src != nullptr) std::memcpy(Slot(*parity, rank_), src, static_cast<size_t>(len) * sizeof(float));
  Publish(call);
  return WaitForPeers(call);
}

absl::Status ShmExchange::AllReduceSum(float* data, int64_t n) {
  const int64_t window = kSlotBytes / static_cast<int64_t>(sizeof(float));
  for (int64_t off = 0; off < n; off += window) {
    const int64_t len = std::min(window, n - off);
    int k = 0;
    if (absl::Status s = ExchangeWindow(data + off, len, &k); !s.ok()) return s;
    for (int q = 0; q < size_; ++q) parts_[q] = Slot(k, q);
    SumInRankOrder(parts_.data(), size_, len, data + off);
  }
  return absl::OkStatus();
}

absl::Status ShmExchange::AllGather(const float* in, int64_t n, float* out) {
  const int64_t window = kSlotBytes / static_cast<int64_t>(sizeof(float));
  std::memcpy(out + rank_ * n, in, static_cast<size_t>(n) * sizeof(float));
  for (int64_t off = 0; off < n; off += window) {
    const int64_t len = std::min(window, n - off);
    int k = 0;
    if (absl::Status s = ExchangeWindow(in + off, len, &k); !s.ok()) return s;
    for (int q = 0; q < size_; ++q) {
      if (q != rank_) std::memcpy(out + q * n + off, Slot(k, q), static_cast<size_t>(len) * sizeof(float));
    }
  }
  return absl::OkStatus();
}

absl::Status ShmExchange::GatherColumnsToRoot(const float* in, int64_t rows, int64_t cols, float* out) {
  const int64_t window = kSlotBytes / static_cast<int64_t>(sizeof(float));
  const int64_t n = rows * cols, width = size_ * cols;
  const bool root = rank_ == 0;
  if (root) {
    for (int64_t i = 0; i < rows; ++i) {
      std::memcpy(out + i * width, in + i * cols, static_cast<size_t>(cols) * sizeof(float));
    }
  }
  for (int64_t off = 0; off < n; off += window) {
    const int64_t len = std::min(window, n - off);
    int k = 0;
    // Every rank publishes each window (the parities stay in step), but
    // only rank 0 reads, so only the others copy into their slots.
    if (absl::Status s = ExchangeWindow(root ? nullptr : in + off, len, &k); !s.ok()) return s;
    if (!root) continue;
    for (int q = 1; q < size_; ++q) {
      const float* slot = Slot(k, q);
      // The window [off, off + len) of rank q's rows, a piece of a row at a time.
      for (int64_t e = off; e < off + len;) {
        const int64_t row = e / cols, col = e % cols;
        const int64_t piece = std::min(cols - col, off + len - e);
        std::memcpy(out + row * width + q * cols + col, slot + (e - off), static_cast<size_t>(piece) * sizeof(float));
        e += piece;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace strata::worker
