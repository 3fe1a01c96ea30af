#include "kernels/cpu/huge_pages.h"

#include <cstdint>
#include <limits>

#include "gtest/gtest.h"

namespace strata::kernels::cpu {
namespace {

TEST(HugePagesTest, ZeroedAlignedAndWritable) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1000}, (int64_t{2} << 20) / 2 + 3, int64_t{5} << 20}) {
    HugePageArray<uint16_t> a;
    ASSERT_TRUE(a.Allocate(n)) << n;
    EXPECT_EQ(a.size(), n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % (uintptr_t{2} << 20), 0u) << n;
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], 0) << n << " at " << i;
    for (int64_t i = 0; i < n; ++i) a[i] = static_cast<uint16_t>(i * 7);
    for (int64_t i = 0; i < n; i += 997) ASSERT_EQ(a[i], static_cast<uint16_t>(i * 7));
  }
}

TEST(HugePagesTest, ReallocateAndRefuse) {
  HugePageArray<float> a;
  ASSERT_TRUE(a.Allocate(100));
  a[99] = 1.5f;
  ASSERT_TRUE(a.Allocate(200));  // the old memory is returned, the new is zeroed
  EXPECT_EQ(a[99], 0.0f);
  EXPECT_EQ(a.size(), 200);
  int64_t mapped = 0;
  EXPECT_EQ(AllocateHugePages(-1, &mapped), nullptr);
  EXPECT_EQ(mapped, 0);
  EXPECT_EQ(AllocateHugePages(std::numeric_limits<int64_t>::max(), &mapped), nullptr);
  EXPECT_EQ(mapped, 0);
  // More than the address space, and more bytes than int64 holds: refused,
  // not a crash.
  EXPECT_FALSE(a.Allocate(int64_t{1} << 50));
  EXPECT_EQ(a.size(), 0);
  EXPECT_FALSE(a.Allocate(std::numeric_limits<int64_t>::max()));
  EXPECT_FALSE(a.Allocate(-5));
  EXPECT_EQ(a.size(), 0);
  EXPECT_EQ(a.data(), nullptr);
}

}  // namespace
}  // namespace strata::kernels::cpu
