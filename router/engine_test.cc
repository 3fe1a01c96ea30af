// The fleet's plan checks: a worker whose identity, model or layer range
// does not fit its pipeline is refused with the reason, and a replica that
// covers the model exactly once is accepted.
#include "router/engine.h"

#include "gtest/gtest.h"

namespace strata::router {
namespace {

v1::RegisterRequest Worker(int stage, int stages, int rank, int tp, int first, int last) {
  v1::RegisterRequest r;
  auto* id = r.mutable_identity();
  id->set_pipeline("p0");
  id->set_stage(stage);
  id->set_num_stages(stages);
  id->set_tp_rank(rank);
  id->set_tp_size(tp);
  id->set_first_layer(first);
  id->set_last_layer(last);
  id->set_has_embedding(stage == 0);
  id->set_has_lm_head(stage + 1 == stages);
  r.set_model_name("m");
  r.mutable_shape()->set_num_layers(8);
  r.mutable_shape()->set_vocab_size(512);
  r.mutable_shape()->set_hidden_size(64);
  r.mutable_shape()->set_max_position_embeddings(4096);
  r.set_control_address("127.0.0.1:1");
  r.set_data_address("127.0.0.1:2");
  r.set_kv_num_blocks(100);
  r.set_kv_block_size(16);
  r.set_epoch(7);
  return r;
}

std::string Refusal(Engine& e, const v1::RegisterRequest& r) { return std::string(e.Register(r).message()); }

TEST(EngineTest, RegistrationChecksThePlan) {
  EngineOptions o;
  o.heartbeat = std::chrono::milliseconds(100000);  // no probes during the test
  auto e = Engine::Create(o, nullptr);
  ASSERT_TRUE(e.ok()) << e.status();
  Engine& engine = **e;
  ASSERT_TRUE(engine.Register(Worker(0, 2, 0, 2, 0, 4)).ok());
  // Same stage, other rank, other layers.
  EXPECT_NE(Refusal(engine, Worker(0, 2, 1, 2, 0, 3)).find("holds layers [0, 4)"), std::string::npos);
  // A gap between stages.
  EXPECT_NE(Refusal(engine, Worker(1, 2, 0, 2, 5, 8)).find("cover each layer once"), std::string::npos);
  // The last stage must end at the last layer.
  EXPECT_NE(Refusal(engine, Worker(1, 2, 0, 2, 4, 7)).find("must end at layer 8"), std::string::npos);
  // Another TP size or stage count in the same pipeline.
  EXPECT_NE(Refusal(engine, Worker(1, 2, 0, 4, 4, 8)).find("tp_size 2"), std::string::npos);
  EXPECT_NE(Refusal(engine, Worker(1, 3, 0, 2, 4, 8)).find("2 stages"), std::string::npos);
  // Another model.
  v1::RegisterRequest other = Worker(1, 2, 0, 2, 4, 8);
  other.set_model_name("n");
  EXPECT_EQ(engine.Register(other).code(), absl::StatusCode::kFailedPrecondition);
  other = Worker(1, 2, 0, 2, 4, 8);
  other.mutable_shape()->set_vocab_size(1024);
  EXPECT_EQ(engine.Register(other).code(), absl::StatusCode::kFailedPrecondition);
  // Malformed identities.
  v1::RegisterRequest bad = Worker(2, 2, 0, 2, 4, 8);
  EXPECT_NE(Refusal(engine, bad).find("identity.stage"), std::string::npos);
  bad = Worker(1, 2, 2, 2, 4, 8);
  EXPECT_NE(Refusal(engine, bad).find("identity.tp_rank"), std::string::npos);
  bad = Worker(1, 2, 0, 2, 4, 9);
  EXPECT_NE(Refusal(engine, bad).find("layers"), std::string::npos);
  bad = Worker(1, 2, 0, 2, 4, 8);
  bad.mutable_identity()->set_has_embedding(true);
  EXPECT_NE(Refusal(engine, bad).find("embedding"), std::string::npos);
  bad = Worker(1, 2, 0, 2, 4, 8);
  bad.set_data_address("nowhere");
  EXPECT_NE(Refusal(engine, bad).find("HOST:PORT"), std::string::npos);
  bad = Worker(1, 2, 0, 2, 4, 8);
  bad.set_kv_num_blocks(0);
  EXPECT_FALSE(engine.Register(bad).ok());
  // The rest of a good plan.
  EXPECT_TRUE(engine.Register(Worker(0, 2, 1, 2, 0, 4)).ok());
  EXPECT_TRUE(engine.Register(Worker(1, 2, 0, 2, 4, 8)).ok());
  EXPECT_TRUE(engine.Register(Worker(1, 2, 1, 2, 4, 8)).ok());
  v1::ModelInfo info;
  int32_t up = 0, total = 0;
  ASSERT_TRUE(engine.Model(&info, &up, &total));
  EXPECT_EQ(total, 1);
  ASSERT_EQ(info.stages_size(), 2);
  EXPECT_EQ(info.stages(1).first_layer(), 4);
}

}  // namespace
}  // namespace strata::router
