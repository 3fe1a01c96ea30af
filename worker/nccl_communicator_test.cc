// The NCCL communicator on the GPU at hand. One GPU holds one rank (NCCL
// refuses two ranks on one device), so this checks a single-rank
// communicator end to end: id creation, joining, all-reduce and all-gather on
// device memory, and the input checks. Multi-rank runs need a multi-GPU
// machine (tests/gpu/run.sh runs this test there too).
#include "worker/nccl_communicator.h"

#include <cuda_runtime.h>

#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/test_util.h"

namespace strata::worker {
namespace {

class NcclCommunicatorTest : public kernels::cuda::testing::GpuTest {};

TEST_F(NcclCommunicatorTest, SingleRankCollectives) {
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  auto comm = NcclCommunicator::Create(*id, 0, 1, stream, 20000);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->rank(), 0);
  EXPECT_EQ((*comm)->size(), 1);
  std::vector<float> host(1000);
  for (int i = 0; i < 1000; ++i) host[i] = i * 0.5f - 3.0f;
  float *d, *g;
  ASSERT_EQ(cudaMalloc(&d, 4000), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&g, 4000), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d, host.data(), 4000, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE((*comm)->AllReduceSum(d, 1000).ok());
  ASSERT_TRUE((*comm)->AllGather(d, 1000, g).ok());
  ASSERT_TRUE((*comm)->Synchronize().ok());
  std::vector<float> back(1000), gathered(1000);
  cudaMemcpy(back.data(), d, 4000, cudaMemcpyDeviceToHost);
  cudaMemcpy(gathered.data(), g, 4000, cudaMemcpyDeviceToHost);
  EXPECT_EQ(back, host);
  EXPECT_EQ(gathered, host);
  EXPECT_FALSE((*comm)->AllReduceSum(d, -1).ok());
  cudaFree(d);
  cudaFree(g);
  comm->reset();
  cudaStreamDestroy(stream);
}

TEST(NcclCommunicatorArgsTest, RejectsBadIdAndRank) {
  EXPECT_EQ(NcclCommunicator::Create("short", 0, 1, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclCommunicator::Create(std::string(128, 'x'), 2, 2, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata::worker
