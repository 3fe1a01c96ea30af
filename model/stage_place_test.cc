#include "model/stage_place.h"

#include "gtest/gtest.h"

namespace strata::model {
namespace {

TEST(StagePlaceTest, EvenSplitCoversEveryLayerOnce) {
  for (int64_t layers : {2, 7, 16, 126}) {
    for (int32_t stages = 1; stages <= std::min<int64_t>(layers, 9); ++stages) {
      int64_t next = 0;
      for (int32_t s = 0; s < stages; ++s) {
        auto p = StagePlace::Create(s, stages, 0, 1, layers);
        ASSERT_TRUE(p.ok()) << p.status();
        EXPECT_EQ(p->first_layer(), next);
        EXPECT_LT(p->first_layer(), p->last_layer());
        next = p->last_layer();
        EXPECT_EQ(p->has_embedding(), s == 0);
        EXPECT_EQ(p->has_lm_head(), s + 1 == stages);
        if (s > 0) {
          auto prev = StagePlace::Create(s - 1, stages, 0, 1, layers);
          EXPECT_TRUE(prev->CheckFollowedBy(*p).ok());
        }
      }
      EXPECT_EQ(next, layers);
    }
  }
}

TEST(StagePlaceTest, BalancedSplitEvensOutTheCostliestStage) {
  // No extra cost: as even as the count allows, the earlier stages first.
  EXPECT_EQ(StagePlace::BalancedSplit(16, 2, 1, 0), (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(StagePlace::BalancedSplit(7, 3, 1, 0), (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(StagePlace::BalancedSplit(5, 1, 1, 100), (std::vector<int64_t>{5}));
  EXPECT_EQ(StagePlace::BalancedSplit(4, 4, 1, 100), (std::vector<int64_t>{1, 1, 1, 1}));
  // Llama 3.2 1B: 60.8M parameters a layer, a 262.7M lm_head on the last
  // stage. 10 + 6 costs at most 627.5M against 748.1M for 8 + 8.
  EXPECT_EQ(StagePlace::BalancedSplit(16, 2, 60.8e6, 262.7e6), (std::vector<int64_t>{10, 6}));
  EXPECT_EQ(StagePlace::BalancedSplit(16, 4, 60.8e6, 262.7e6), (std::vector<int64_t>{5, 5, 5, 1}));
  // Whatever the costs, every stage has a layer and the counts cover the model.
  for (double extra : {0.0, 1.0, 3.5, 1e9}) {
    for (int32_t stages = 1; stages <= 9; ++stages) {
      const std::vector<int64_t> n = StagePlace::BalancedSplit(9, stages, 1, extra);
      ASSERT_EQ(n.size(), static_cast<size_t>(stages));
      int64_t total = 0;
      for (int64_t k : n) {
        EXPECT_GE(k, 1);
        total += k;
      }
      EXPECT_EQ(total, 9);
    }
  }
}

TEST(StagePlaceTest, RanksAndLeaders) {
  auto p = StagePlace::Create(1, 2, 3, 4, 8);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->rank(), 7);
  EXPECT_FALSE(p->is_stage_leader());
  EXPECT_EQ(p->Describe(), "stage 1 rank 3 (layers [4, 8))");
  auto peer = StagePlace::Create(1, 2, 0, 4, 8);
  EXPECT_TRUE(peer->is_stage_leader());
  EXPECT_TRUE(p->CheckSameStage(*peer).ok());
}

TEST(StagePlaceTest, ExplicitLayers) {
  auto first = StagePlace::Create(0, 2, 0, 1, 8, 0, 3);
  auto second = StagePlace::Create(1, 2, 0, 1, 8, 3, 8);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_TRUE(first->CheckFollowedBy(*second).ok());
  auto gap = StagePlace::Create(1, 2, 0, 1, 8, 4, 8);
  ASSERT_TRUE(gap.ok());
  absl::Status s = first->CheckFollowedBy(*gap);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("ends at layer 3 but stage 1 starts at 4"), std::string::npos) << s;
  auto other_rank = StagePlace::Create(1, 2, 1, 2, 8, 4, 8);
  auto this_rank = StagePlace::Create(1, 2, 0, 2, 8, 3, 8);
  EXPECT_FALSE(this_rank->CheckSameStage(*other_rank).ok());
}

TEST(StagePlaceTest, RefusesBadPlacesNamingTheField) {
  struct Case {
    int32_t stage, stages, rank, tp;
    int64_t layers, first, last;
    const char* names;
  };
  const Case cases[] = {
      {0, 0, 0, 1, 8, -1, -1, "num_stages"},   {2, 2, 0, 1, 8, -1, -1, "stage 2"},
      {-1, 2, 0, 1, 8, -1, -1, "stage -1"},    {0, 1, 0, 0, 8, -1, -1, "tp_size"},
      {0, 1, 0, 65, 8, -1, -1, "tp_size"},     {0, 1, 2, 2, 8, -1, -1, "tp_rank 2"},
      {0, 9, 0, 1, 8, -1, -1, "more than"},    {0, 1, 0, 1, 0, -1, -1, "num_layers"},
      {0, 2, 0, 1, 8, 1, 4, "start at layer 0"}, {1, 2, 0, 1, 8, 4, 7, "end at layer 8"},
      {0, 2, 0, 1, 8, 3, 3, "non-empty"},      {1, 2, 0, 1, 8, 4, 9, "non-empty"},
      {0, 2000, 0, 1, 4000, -1, -1, "num_stages"},
  };
  for (const Case& c : cases) {
    auto p = StagePlace::Create(c.stage, c.stages, c.rank, c.tp, c.layers, c.first, c.last);
    ASSERT_FALSE(p.ok()) << c.names;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.names), std::string::npos) << p.status() << " wanted " << c.names;
  }
}

TEST(StagePlaceTest, HalfLayerBoundaries) {
  EXPECT_EQ(HalfLayerString(19), "9.5");
  EXPECT_EQ(HalfLayerString(16), "8");
  EXPECT_EQ(*ParseHalfLayer("9.5"), 19);
  EXPECT_EQ(*ParseHalfLayer("0"), 0);
  EXPECT_EQ(*ParseHalfLayer("0.5"), 1);
  for (const char* bad : {"", ".5", "9.25", "-1", "9.", "x", "1e3", "9.50", " 9"}) {
    EXPECT_EQ(ParseHalfLayer(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  // 16 layers cut inside layer 9, after its attention.
  auto first = StagePlace::CreateHalves(0, 2, 0, 1, 16, 0, 19);
  auto second = StagePlace::CreateHalves(1, 2, 0, 1, 16, 19, 32);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->first_layer(), 0);
  EXPECT_EQ(first->last_layer(), 10);
  EXPECT_FALSE(first->starts_at_mlp());
  EXPECT_TRUE(first->ends_after_attention());
  EXPECT_EQ(second->first_layer(), 9);
  EXPECT_EQ(second->last_layer(), 16);
  EXPECT_TRUE(second->starts_at_mlp());
  EXPECT_FALSE(second->ends_after_attention());
  EXPECT_EQ(second->Describe(), "stage 1 rank 0 (layers [9.5, 16))");
  EXPECT_TRUE(first->CheckFollowedBy(*second).ok());
  // Layer 9 whole on the second stage overlaps the first's attention of it.
  auto overlap = StagePlace::CreateHalves(1, 2, 0, 1, 16, 18, 32);
  absl::Status s = first->CheckFollowedBy(*overlap);
  EXPECT_NE(s.message().find("ends at layer 9.5 but stage 1 starts at 9"), std::string::npos) << s;
  // A rank that says the same layers in halves is the same stage.
  auto peer = StagePlace::CreateHalves(1, 2, 1, 2, 16, 19, 32);
  auto other = StagePlace::CreateHalves(1, 2, 0, 2, 16, 18, 32);
  EXPECT_FALSE(other->CheckSameStage(*peer).ok());
  // The ends still bind: stage 0 from layer 0, the last stage to the end.
  EXPECT_FALSE(StagePlace::CreateHalves(0, 2, 0, 1, 16, 1, 19).ok());
  EXPECT_FALSE(StagePlace::CreateHalves(1, 2, 0, 1, 16, 19, 31).ok());
  EXPECT_FALSE(StagePlace::CreateHalves(1, 2, 0, 1, 16, 19, 19).ok());
  EXPECT_FALSE(StagePlace::CreateHalves(1, 2, 0, 1, 16, 19, 33).ok());
  // Whole layers through Create are even halves.
  auto whole = StagePlace::Create(1, 2, 0, 1, 16, 10, 16);
  EXPECT_EQ(whole->begin_half(), 20);
  EXPECT_EQ(whole->end_half(), 32);
}

}  // namespace
}  // namespace strata::model
