// Shard loading reads only this rank's slices: a checkpoint on disk is
// evicted from the page cache, one TP rank of one stage is loaded, and
// mincore() shows which pages of the mapped files came back. Pages outside
// the rank's slices (except pages a slice shares at its edges) must not.
// Skips where the page cache cannot be dropped (tmpfs).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/reference/reference_backend.h"
#include "model/checkpoint.h"
#include "model/make_model.h"
#include "worker/stage_executor.h"

namespace strata::worker {
namespace {

class FakeComm : public Communicator {
 public:
  FakeComm(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float*, int64_t) override { return absl::UnimplementedError("load only"); }
  absl::Status AllGather(const float*, int64_t, float*) override { return absl::UnimplementedError("load only"); }
  absl::Status Synchronize() override { return absl::OkStatus(); }

 private:
  int rank_, size_;
};

// Resident pages of [addr, addr + n) (page-aligned start).
std::vector<unsigned char> Residency(const void* addr, size_t n) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((n + page - 1) / page);
  if (mincore(const_cast<void*>(addr), n, v.data()) != 0) v.clear();
  return v;
}

// A 2-shard f32 model in `dir`, evicted from the page cache.
void WriteEvictedModel(const std::string& dir) {
  model::MakeModelOptions o;
  o.config = *model::LlamaPreset("tiny");
  o.config.hidden_size = 512;
  o.config.num_heads = 8;
  o.config.num_kv_heads = 4;
  o.config.head_dim = 64;
  o.config.intermediate_size = 2048;
  o.config.vocab_size = 4096;
  o.config.num_layers = 4;
  o.dtype = model::DType::kF32;
  o.shards = 2;
  ASSERT_TRUE(model::WriteRandomModel(model::PosixFileSystem(), dir, o).ok());
  // Evict every shard from the page cache.
  std::vector<std::string> files = {dir + "/model-00001-of-00002.safetensors", dir + "/model-00002-of-00002.safetensors"};
  for (const std::string& f : files) {
    const int fd = open(f.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0) << f;
    fsync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
}

// The byte ranges of tensor `n` that stage 1 of 2, TP rank 1 of 2 (layers 2
// and 3, the final norm and the lm_head) holds.
std::vector<std::pair<int64_t, int64_t>> OwnRanges(const std::string& n, const model::TensorView& tensor) {
  const model::TensorView* t = &tensor;
  const int64_t rows = t->shape.size() == 2 ? t->shape[0] : 1, cols = t->shape.back();
  const int64_t elem = static_cast<int64_t>(t->num_bytes) / (rows * cols);
  // Which byte ranges of this tensor are this rank's.
  std::vector<std::pair<int64_t, int64_t>> own;
  bool held = false;
  int64_t layer = -1;
  if (n.rfind("model.layers.", 0) == 0) layer = std::atoll(n.c_str() + 13);
  if (layer >= 2 || n == "model.norm.weight" || n == "lm_head.weight") held = true;
  if (held) {
    const bool row_parallel = n.find("o_proj") != std::string::npos || n.find("down_proj") != std::string::npos;
    const bool norm = t->shape.size() == 1;
    if (norm) {
    own.push_back({0, static_cast<int64_t>(t->num_bytes)});
    } else if (row_parallel) {
    for (int64_t r = 0; r < rows; ++r) own.push_back({(r * cols + cols / 2) * elem, (r * cols + cols) * elem});
    } else {
    own.push_back({rows / 2 * cols * elem, rows * cols * elem});
    }
  }
  return own;
}

TEST(ShardLoadTest, LoadsOnlyItsSlicesPages) {
  const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp",
                                       "/shard_load_", getpid());
  ASSERT_NO_FATAL_FAILURE(WriteEvictedModel(dir));
  auto ckpt = model::Checkpoint::Open(model::PosixFileSystem(), dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  // The mapping of every tensor, to check residency before and after.
  const std::vector<std::string> names = (*ckpt)->TensorNames();
  size_t resident_before = 0, total_pages = 0;
  for (const std::string& n : names) {
    auto t = (*ckpt)->Find(n);
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t a = reinterpret_cast<uintptr_t>(t->data) / page * page;
    auto r = Residency(reinterpret_cast<const void*>(a), reinterpret_cast<uintptr_t>(t->data) + t->num_bytes - a);
    for (unsigned char c : r) resident_before += c & 1;
    total_pages += r.size();
  }
  if (resident_before * 2 > total_pages) {
    GTEST_SKIP() << "the page cache cannot be dropped here (" << resident_before << " of " << total_pages
                 << " pages stay resident; tmpfs?)";
  }

  // Stage 1 of 2 (layers 2, 3 and the lm_head), TP rank 1 of 2.
  kernels::ReferenceBackend backend(1);
  FakeComm comm(1, 2);
  StageSpec spec{2, 4, false, true, 1, 2};
  auto ex = StageExecutor::Load(&backend, **ckpt, spec, &comm);
  ASSERT_TRUE(ex.ok()) << ex.status();

  // Bytes that belong to the slice of each tensor, and the bytes of tensors
  // this rank does not hold at all.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t foreign_resident = 0, own_resident = 0, foreign_pages = 0;
  for (const std::string& n : names) {
    auto t = (*ckpt)->Find(n);
    const std::vector<std::pair<int64_t, int64_t>> own = OwnRanges(n, *t);
    std::set<size_t> own_pages;  // page indexes (from the tensor's first page) a slice touches
    const uintptr_t base = reinterpret_cast<uintptr_t>(t->data) / page * page;
    const size_t offset = reinterpret_cast<uintptr_t>(t->data) - base;
    for (auto [b, e] : own) {
      for (size_t p = (offset + b) / page; p <= (offset + e - 1) / page; ++p) own_pages.insert(p);
    }
    auto r = Residency(reinterpret_cast<const void*>(base), offset + t->num_bytes);
    for (size_t p = 0; p < r.size(); ++p) {
      if (own_pages.count(p)) {
        own_resident += r[p] & 1;
      } else {
        ++foreign_pages;
        // The first and last page may hold a neighbouring tensor's bytes.
        if ((r[p] & 1) && p != 0 && p + 1 != r.size()) ++foreign_resident;
      }
    }
  }
  EXPECT_GT(own_resident, 0u);
  EXPECT_EQ(foreign_resident, 0u) << "pages outside this rank's slices were read (of " << foreign_pages << ")";
  std::cout << "own pages resident: " << own_resident << ", foreign pages resident: " << foreign_resident << " of "
            << foreign_pages << "\n";
}

}  // namespace
}  // namespace strata::worker
