#include "transport/buffer_pool.h"

#include <gtest/gtest.h>

namespace strata::transport {
namespace {

TEST(BufferPoolTest, ReusesAGivenBufferForASizeItHolds) {
  BufferPool pool(4, 1 << 20);
  MessageBytes a = pool.Take(65536);
  ASSERT_EQ(a.size(), 65536u);
  a[0] = 7;
  const uint8_t* where = a.data();
  pool.Give(std::move(a));
  EXPECT_EQ(pool.kept_buffers(), 1u);
  MessageBytes b = pool.Take(60000);
  EXPECT_EQ(b.data(), where);  // the same memory, shrunk to the new size
  EXPECT_EQ(b.size(), 60000u);
  EXPECT_EQ(pool.kept_buffers(), 0u);
  EXPECT_EQ(pool.kept_bytes(), 0u);
}

TEST(BufferPoolTest, PicksTheSmallestThatFitsAndSkipsFarLargerOnes) {
  BufferPool pool(8, 1 << 24);
  pool.Give(pool.Take(1 << 20));
  pool.Give(pool.Take(8192));
  pool.Give(pool.Take(16384));
  EXPECT_EQ(pool.kept_buffers(), 3u);
  EXPECT_EQ(pool.Take(10000).capacity(), 16384u);
  // 100 bytes: every kept buffer is more than 4x larger, so a new one.
  MessageBytes small = pool.Take(100);
  EXPECT_EQ(small.size(), 100u);
  EXPECT_LT(small.capacity(), 8192u);
  EXPECT_EQ(pool.kept_buffers(), 2u);
  // Larger than anything kept: a new buffer.
  EXPECT_EQ(pool.Take(2 << 20).size(), size_t{2} << 20);
  EXPECT_EQ(pool.kept_buffers(), 2u);
}

TEST(BufferPoolTest, KeepsNoMoreThanItsLimits) {
  BufferPool pool(2, 3 * 4096);
  for (int i = 0; i < 3; ++i) pool.Give(MessageBytes(4096));
  EXPECT_EQ(pool.kept_buffers(), 2u);  // the buffer limit
  BufferPool by_bytes(10, 3 * 4096);
  by_bytes.Give(MessageBytes(8192));
  by_bytes.Give(MessageBytes(8192));  // 16 KiB in all would pass the byte limit
  EXPECT_EQ(by_bytes.kept_buffers(), 1u);
  EXPECT_EQ(by_bytes.kept_bytes(), 8192u);
  by_bytes.Give(MessageBytes());  // nothing to keep
  EXPECT_EQ(by_bytes.kept_buffers(), 1u);
}

TEST(BufferPoolTest, ANewBufferHasTheSizeAsked) {
  BufferPool pool(1, 1 << 20);
  EXPECT_EQ(pool.Take(0).size(), 0u);
  EXPECT_EQ(pool.Take(12345).size(), 12345u);
}

}  // namespace
}  // namespace strata::transport
