// MakePlan against plans computed by hand. Numbers used throughout:
//
//   80GiB = 85,899,345,920 bytes; the 10% reserve = 8,589,934,592; usable
//   for weights + KV = 77,309,411,328 (72.00 GiB). Bandwidth 3.35e12 B/s.
//   Block size 16; context 131072.
//
//   Per layer, projections = h*q*2 (q, o) + h*kv*2 (k, v) + 3*h*ffn:
//     405b: 16384*16384*2 + 16384*1024*2 + 3*16384*53248 = 3,187,671,040
//      70b:   8192*8192*2 +  8192*1024*2 + 3*8192*28672  =   855,638,016
//       8b:   4096*4096*2 +  4096*1024*2 + 3*4096*14336  =   218,103,808
//   plus two norms of h in bf16 (4h bytes) whole on every rank.
//   Embedding = lm_head = 128256*h parameters, bf16, split by vocabulary:
//     405b: 2,101,346,304 -> at TP 8: 262,668,288 params = 525,336,576 bytes.
//   KV per token per layer per device = 2 (K, V) * (8 / TP) heads * 128 * 2 bytes.
#include "tools/plan.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace strata::tools {
namespace {

constexpr int64_t k80GiB = int64_t{80} << 30;

PlanRequest Request(const char* preset, int64_t gpus, WeightDtype dtype = WeightDtype::kBf16) {
  PlanRequest r;
  r.model = *model::LlamaPreset(preset);
  r.model_label = preset;
  r.devices = gpus;
  r.memory_bytes = k80GiB;
  r.devices_per_node = 8;
  r.dtype = dtype;
  r.context = 131072;
  r.bandwidth_bytes_per_s = 3.35e12;
  return r;
}

struct Case {
  const char* name;
  PlanRequest request;
  bool fits;
  int64_t tp, pp, replicas;
  std::vector<int64_t> layers_per_stage;
  int64_t weight_bytes_per_gpu;
  int64_t kv_blocks, kv_tokens, seqs_8k, seqs_128k;
  double decode_tokens_per_s;  // to 0.01
};

std::vector<Case> Cases() {
  std::vector<Case> c;
  // 405b bf16 on 16 x 80 GiB. 8 GPUs cannot hold 811.7 GB (101.5 GB each),
  // so the smallest replica is 16 = two nodes, widest TP first: TP 8 x PP 2.
  // One layer at TP 8: 3,187,671,040 / 8 * 2 + 4*16384 = 796,983,296 bytes.
  // Layers balance 63 / 63 (the embedding and lm_head weigh the same; the
  // last stage adds the final norm, 32,768 bytes):
  //   stage 0: 525,336,576 + 63 * 796,983,296          = 50,735,284,224
  //   stage 1: 525,336,576 + 32,768 + 63 * 796,983,296 = 50,735,316,992 (the fullest)
  // KV per token per GPU: 63 layers * 2 * 1 head * 128 * 2 = 32,256 bytes.
  //   stage 1: (77,309,411,328 - 50,735,316,992) / (32,256 * 16) = 51,490.0 blocks
  //   stage 0 gives 51,490 too -> 51,490 blocks = 823,840 tokens;
  //   823,840 / 8192 = 100 sequences of 8K, / 131072 = 6 of 128K.
  // Roofline: bytes read per token = (50,735,284,224 - 525,336,576)
  //   + 50,735,316,992 = 100,945,264,640 -> 3.35e12 / that = 33.19 tokens/s.
  c.push_back({"405b_bf16_16_gpus", Request("405b", 16), true, 8, 2, 1, {63, 63}, 50735316992, 51490, 823840, 100, 6,
               33.19});
  // 405b fp8 on 8 x 80 GiB: projections in 1 byte, embedding/lm_head/norms bf16.
  // One layer at TP 8: 3,187,671,040 / 8 + 65,536 = 398,524,416 bytes.
  //   weights = 2 * 525,336,576 + 32,768 + 126 * 398,524,416 = 51,264,782,336
  // KV per token per GPU: 126 * 2 * 1 * 128 * 2 = 64,512 bytes.
  //   (77,309,411,328 - 51,264,782,336) / (64,512 * 16) = 25,232.8 -> 25,232 blocks
  //   = 403,712 tokens: 49 of 8K, 3 of 128K.
  // Roofline: (51,264,782,336 - 525,336,576) = 50,739,445,760 -> 66.02 tokens/s.
  c.push_back({"405b_fp8_8_gpus", Request("405b", 8, WeightDtype::kFp8), true, 8, 1, 1, {126}, 51264782336, 25232,
               403712, 49, 3, 66.02});
  // 70b bf16 on 4 x 80 GiB. TP 2 (2 GPUs) holds the weights,
  //   2 * 1,050,673,152 + 16,384 + 80 * (855,638,016 / 2 * 2 + 32,768) = 70,555,025,408,
  // but leaves (77,309,411,328 - 70,555,025,408) / (80 * 2 * 4 * 128 * 2 = 163,840)
  //   = 41,224 tokens (2,576 blocks = 41,216), under one 131072-token sequence.
  // TP 4: one layer 855,638,016 / 4 * 2 + 32,768 = 427,851,776;
  //   weights = 2 * 525,336,576 + 16,384 + 80 * 427,851,776 = 35,278,831,616
  //   KV per token 80 * 2 * 2 * 128 * 2 = 81,920 -> (77,309,411,328 - 35,278,831,616)
  //   / (81,920 * 16) = 32,066.6 -> 32,066 blocks = 513,056 tokens: 62 x 8K, 3 x 128K.
  // Roofline: 35,278,831,616 - 525,336,576 = 34,753,495,040 -> 96.39 tokens/s.
  c.push_back({"70b_bf16_4_gpus", Request("70b", 4), true, 4, 1, 1, {80}, 35278831616, 32066, 513056, 62, 3, 96.39});
  // The same with --context 32768: TP 2 now fits (41,216 >= 32,768), so two
  // replicas of TP 2 run side by side.
  {
    PlanRequest r = Request("70b", 4);
    r.context = 32768;
    c.push_back({"70b_bf16_4_gpus_32k", r, true, 2, 1, 2, {80}, 70555025408, 2576, 41216, 5, 0, 48.20});
  }
  // 8b bf16 on one 80 GiB GPU: one layer 218,103,808 * 2 + 16,384 = 436,224,000;
  //   weights = 2 * 525,336,576 + 8,192 + 32 * 436,224,000 = 16,060,522,496
  //   KV per token 32 * 2 * 8 * 128 * 2 = 131,072 -> (77,309,411,328 - 16,060,522,496)
  //   / (131,072 * 16) = 29,205.3 -> 29,205 blocks = 467,280 tokens: 57 x 8K, 3 x 128K.
  // Roofline: 16,060,522,496 - 1,050,673,152 = 15,009,849,344 -> 223.19 tokens/s.
  c.push_back({"8b_bf16_1_gpu", Request("8b", 1), true, 1, 1, 1, {32}, 16060522496, 29205, 467280, 57, 3, 223.19});
  // 405b bf16 on two CPU hosts of 512 GiB each (a host is a node of one: TP 1).
  //   usable = 549,755,813,888 - 54,975,581,388 (the reserve, floored) = 494,780,232,500
  //   one layer 3,187,671,040 * 2 + 65,536 = 6,375,407,616; 63 per host:
  //   host 0: 2,101,346,304 * 2 + 63 * 6,375,407,616 = 4,202,692,608 + 401,650,679,808 = 405,853,372,416
  //   host 1: 4,202,692,608 + 32,768 + 401,650,679,808 = 405,853,405,184 (the fullest)
  //   KV per token 63 * 2 * 8 * 128 * 2 = 258,048 -> (494,780,232,500 - 405,853,405,184)
  //   / (258,048 * 16) = 21,538.3 -> 21,538 blocks = 344,608 tokens: 42 x 8K, 2 x 128K.
  {
    PlanRequest r = Request("405b", 2);
    r.device = PlanDevice::kCpuHost;
    r.memory_bytes = int64_t{512} << 30;
    r.devices_per_node = 1;
    r.bandwidth_bytes_per_s = 300e9;
    // Roofline at 300 GB/s: (405,853,372,416 - 4,202,692,608) + 405,853,405,184
    //   = 807,504,084,992 bytes -> 0.37 tokens/s.
    c.push_back({"405b_bf16_2_cpu_hosts", r, true, 1, 2, 1, {63, 63}, 405853405184, 21538, 344608, 42, 2, 0.37});
  }
  return c;
}

TEST(PlanTest, HandComputedPlans) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<Plan> p = MakePlan(c.request);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->fits, c.fits) << p->reason;
    EXPECT_EQ(p->tp, c.tp);
    EXPECT_EQ(p->pp, c.pp);
    EXPECT_EQ(p->replicas, c.replicas);
    EXPECT_EQ(p->layers_per_stage(), c.layers_per_stage);
    EXPECT_EQ(p->weight_bytes_per_device, c.weight_bytes_per_gpu);
    EXPECT_EQ(p->kv_blocks_per_worker, c.kv_blocks);
    EXPECT_EQ(p->kv_tokens_per_pipeline, c.kv_tokens);
    EXPECT_EQ(p->concurrent_8k, c.seqs_8k);
    EXPECT_EQ(p->concurrent_128k, c.seqs_128k);
    EXPECT_NEAR(p->decode_tokens_per_s, c.decode_tokens_per_s, 0.005);
    EXPECT_TRUE(p->reason.empty()) << p->reason;
    // The stages tile [0, num_layers) and the per-stage bytes add up.
    int64_t next = 0;
    for (const StagePlanEntry& e : p->stages) {
      EXPECT_EQ(e.first_layer, next);
      next = e.last_layer;
      EXPECT_EQ(e.weight_bytes_per_device, StageWeightBytes(c.request, p->tp, p->pp, &e - &p->stages[0], e.layers()));
      EXPECT_LE(e.weight_bytes_per_device + e.kv_bytes_per_device + p->reserve_bytes_per_device,
                c.request.memory_bytes);
    }
    EXPECT_EQ(next, c.request.model.num_layers);
  }
}

// 405b bf16 on 8 x 80 GiB: at TP 8 x PP 1 one GPU needs
//   2 * 525,336,576 + 32,768 + 126 * 796,983,296 = 101,470,601,216 bytes (94.50 GiB)
// of weights, 24,161,189,888 above its 77,309,411,328 usable; any other
// split of 8 GPUs holds as much per GPU. The whole model is
//   126 * (3,187,671,040 * 2 + 65,536) + 2 * 2,101,346,304 * 2 + 32,768 = 811,706,777,600 bytes,
// and the fewest GPUs that fit are 16 (TP 8 x PP 2, the case above).
TEST(PlanTest, DoesNotFitSaysWhy) {
  absl::StatusOr<Plan> p = MakePlan(Request("405b", 8));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->fits);
  EXPECT_EQ(p->tp, 8);
  EXPECT_EQ(p->pp, 1);
  EXPECT_EQ(p->replicas, 0);
  EXPECT_EQ(p->weight_bytes_per_device, 101470601216);
  EXPECT_EQ(p->model_weight_bytes, 811706777600);
  EXPECT_EQ(p->needs_devices, 16);
  EXPECT_EQ(p->kv_tokens_per_pipeline, 0);
  for (const char* part : {"405b in bf16 (811.71 GB", "does not fit on 8 GPUs of 85.90 GB (80.00 GiB)",
                           "TP 8 x PP 1 (8 GPUs)", "101.47 GB (94.50 GiB) of weights", "above the 77.31 GB (72.00 GiB)",
                           "10% reserve", "needs 16 such GPUs (TP 8 x PP 2)", "--dtype fp8"}) {
    EXPECT_NE(p->reason.find(part), std::string::npos) << "missing \"" << part << "\" in: " << p->reason;
  }
}

// The KV cache can be the limit too: 70b on 2 GPUs holds its weights at
// TP 2 but only 41,216 KV tokens (above), under one 131072-token sequence.
TEST(PlanTest, KvTooSmallForTheContextSaysSo) {
  absl::StatusOr<Plan> p = MakePlan(Request("70b", 2));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->fits);
  EXPECT_NE(p->reason.find("room for 41216 KV tokens per pipeline, fewer than one sequence of --context 131072"),
            std::string::npos)
      << p->reason;
  EXPECT_EQ(p->needs_devices, 4);
}

// TP never exceeds the node: 405b fp8 with 4 GPUs per node. One node (TP 4)
// would need about 102 GB per GPU; two nodes as TP 4 x PP 2 hold what TP 8
// did above (63 layers of 797 MB at TP 4 in fp8 per GPU, the same KV per
// token), so 16 GPUs run two replicas of TP 4 x PP 2.
TEST(PlanTest, TpStaysInsideANode) {
  PlanRequest r = Request("405b", 16, WeightDtype::kFp8);
  r.devices_per_node = 4;
  absl::StatusOr<Plan> p = MakePlan(r);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(p->fits) << p->reason;
  EXPECT_EQ(p->tp, 4);
  EXPECT_EQ(p->pp, 2);
  EXPECT_EQ(p->replicas, 2);
  EXPECT_EQ(p->layers_per_stage(), (std::vector<int64_t>{63, 63}));
}

// Eight GPUs of an 8B model: eight replicas of one GPU, none idle.
TEST(PlanTest, SmallModelsReplicate) {
  absl::StatusOr<Plan> p = MakePlan(Request("8b", 8));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->fits);
  EXPECT_EQ(p->devices_per_replica, 1);
  EXPECT_EQ(p->replicas, 8);
  EXPECT_EQ(p->unused_devices, 0);
}

TEST(PlanTest, BadRequestsNameTheFlag) {
  struct Bad {
    const char* name;
    PlanRequest request;
    const char* message;
  };
  std::vector<Bad> bad;
  auto with = [](auto edit) {
    PlanRequest r = Request("405b", 16);
    edit(r);
    return r;
  };
  bad.push_back({"partial node", with([](PlanRequest& r) { r.devices = 12; }),
                 "--gpus: 12 is not a whole number of nodes of --gpus-per-node 8"});
  bad.push_back({"no gpus", with([](PlanRequest& r) { r.devices = 0; }), "--gpus: 0 is outside"});
  bad.push_back({"long context", with([](PlanRequest& r) { r.context = 200000; }),
                 "--context: 200000 is outside [1, 131072]"});
  bad.push_back({"no memory", with([](PlanRequest& r) { r.memory_bytes = 1000; }), "--gpu-memory: 1000 bytes"});
  bad.push_back({"cpu memory", with([](PlanRequest& r) {
                   r.device = PlanDevice::kCpuHost;
                   r.memory_bytes = 10;
                 }),
                 "--host-memory: 10 bytes"});
  bad.push_back({"reserve", with([](PlanRequest& r) { r.reserve_fraction = 1.5; }), "--reserve: 1.5 is outside"});
  bad.push_back({"bandwidth", with([](PlanRequest& r) { r.bandwidth_bytes_per_s = 0; }), "--gpu-bandwidth"});
  bad.push_back({"node", with([](PlanRequest& r) { r.devices_per_node = 100; }), "--gpus-per-node: 100"});
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.name);
    absl::StatusOr<Plan> p = MakePlan(b.request);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(b.message), std::string::npos) << p.status();
  }
}

TEST(PlanTest, ParsesSizesAndBandwidths) {
  struct Size {
    const char* text;
    int64_t bytes;
  };
  for (const Size& s : std::vector<Size>{{"80GiB", k80GiB},
                                         {"80 GB", 80000000000},
                                         {"1.5TiB", int64_t{3} << 39},
                                         {"512mib", int64_t{512} << 20},
                                         {"141GB", 141000000000},
                                         {"4096", 4096}}) {
    absl::StatusOr<int64_t> b = ParseByteSize("gpu-memory", s.text);
    ASSERT_TRUE(b.ok()) << s.text << ": " << b.status();
    EXPECT_EQ(*b, s.bytes) << s.text;
  }
  for (const char* bad : {"", "GiB", "-1GB", "80XB", "eighty", "0GB", "1e400GB"}) {
    absl::StatusOr<int64_t> b = ParseByteSize("gpu-memory", bad);
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_NE(b.status().message().find(absl::StrCat("--gpu-memory: \"", bad, "\"")), std::string::npos)
        << b.status();
  }
  absl::StatusOr<double> bw = ParseBandwidth("gpu-bandwidth", "3.35TB/s");
  ASSERT_TRUE(bw.ok()) << bw.status();
  EXPECT_DOUBLE_EQ(*bw, 3.35e12);
  EXPECT_DOUBLE_EQ(*ParseBandwidth("gpu-bandwidth", "900 GB/s"), 900e9);
  for (const char* bad : {"3.35TB", "fast/s", "/s"}) {
    absl::StatusOr<double> b = ParseBandwidth("gpu-bandwidth", bad);
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_NE(b.status().message().find("--gpu-bandwidth: \""), std::string::npos) << b.status();
  }
}

}  // namespace
}  // namespace strata::tools
