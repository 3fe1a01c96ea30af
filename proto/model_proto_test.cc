// Checks that the generated message code links and round-trips on the wire.
#include <string>

#include "gtest/gtest.h"
#include "strata/v1/model.pb.h"

namespace {

TEST(ModelProtoTest, RoundTripsThroughTheWireFormat) {
  strata::v1::ModelInfo info;
  info.set_name("llama-3.1-405b");
  info.mutable_shape()->set_hidden_size(16384);
  info.mutable_shape()->add_eos_token_ids(128001);
  info.mutable_shape()->add_eos_token_ids(128009);
  info.mutable_shape()->mutable_rope_scaling()->set_factor(8.0);
  strata::v1::StagePlan* stage = info.add_stages();
  stage->set_first_layer(63);
  stage->set_last_layer(126);

  std::string bytes;
  ASSERT_TRUE(info.SerializeToString(&bytes));
  strata::v1::ModelInfo parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  EXPECT_EQ(parsed.name(), "llama-3.1-405b");
  EXPECT_EQ(parsed.shape().hidden_size(), 16384);
  ASSERT_EQ(parsed.shape().eos_token_ids_size(), 2);
  EXPECT_EQ(parsed.shape().eos_token_ids(1), 128009);
  EXPECT_DOUBLE_EQ(parsed.shape().rope_scaling().factor(), 8.0);
  EXPECT_EQ(parsed.stages(0).last_layer(), 126);
}

TEST(ModelProtoTest, RejectsGarbage) {
  strata::v1::ModelInfo parsed;
  EXPECT_FALSE(parsed.ParseFromString(std::string("\xff\xff\xff\xff", 4)));
}

}  // namespace
