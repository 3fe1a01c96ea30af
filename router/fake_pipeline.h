// Test doubles for the router's core: a control plane whose workers all
// answer, and a one-stage, one-rank pipeline on a thread of its own that
// answers every plan over the loopback transport. For unit tests only.
#ifndef STRATA_ROUTER_FAKE_PIPELINE_H_
#define STRATA_ROUTER_FAKE_PIPELINE_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "router/dispatcher.h"
#include "router/worker_control.h"
#include "strata/v1/worker.pb.h"
#include "transport/loopback_transport.h"

namespace strata::router::testing_util {

using std::chrono::milliseconds;
using transport::LoopbackNetwork;
using transport::LoopbackTransport;

class FakeControl : public WorkerControl {
 public:
  std::vector<Probe> ProbeAll(const std::vector<ProbeTarget>& targets, milliseconds) override {
    return std::vector<Probe>(targets.size(), Probe::kAlive);
  }
  void AbortAll(const std::vector<std::string>& addresses, uint64_t up_to) override {
    aborts += static_cast<int>(addresses.size());
  }
  absl::Status SetDataKeyAll(const std::vector<std::string>& addresses, uint64_t key_id, const std::string& key,
                             milliseconds) override {
    if (on_data_key) on_data_key(addresses, key_id, key);
    keys_set += static_cast<int>(addresses.size());
    return absl::OkStatus();
  }
  std::atomic<int> aborts{0};
  std::atomic<int> keys_set{0};
  // Gets every data key a replica's members were given (tests key their fake stages with it).
  std::function<void(const std::vector<std::string>&, uint64_t, const std::string&)> on_data_key;
};

// A one-stage, one-rank pipeline: answers each plan with token 7 for every
// sampling sequence, while `answer` is set; rows that ask for prompt
// logprobs get -p / 100 for the token at position p.
class FakeStage {
 public:
  FakeStage(LoopbackNetwork* net, std::string router) : endpoint_(net->Listen()), router_(std::move(router)) {
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeStage() {
    stop_ = true;
    thread_.join();
  }
  std::string address() const { return endpoint_->address(); }
  transport::LoopbackTransport* transport() { return endpoint_.get(); }
  std::atomic<bool> answer{true};
  std::atomic<int> delay_ms{0};  // before each answer (a slower pipeline)
  // Sample (context length) % 50 + 1 instead of 7: a sequence's tokens then
  // depend on their positions only, whichever replica computes them.
  std::atomic<bool> positional{false};
  // Sample SampledToken(seed, step) instead: what a worker's sampler does
  // (its draw depends on the request's seed and the sampling step only).
  std::atomic<bool> seeded{false};
  std::atomic<int> steps{0};

  static int32_t SampledToken(uint64_t seed, uint64_t step) {
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + step + 1;  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return static_cast<int32_t>((z ^ (z >> 31)) % 50) + 1;
  }

 private:
  void Serve() {
    auto hp = transport::ParseHostPort(router_, "router");
    const int peer = *endpoint_->Connect(*hp);
    while (!stop_) {
      auto m = endpoint_->Receive(milliseconds(10));
      if (!m.ok() || !answer) continue;
      auto plan = transport::DecodePlan(m->plan(), m->header.plan_bytes);
      if (!plan.ok()) continue;
      steps++;
      if (delay_ms > 0) std::this_thread::sleep_for(milliseconds(delay_ms));
      transport::StepResult r;
      r.step_id = plan->step_id;
      r.timings = {{0, 0.0f, 0.001f, 0.0f, 0.0f}};
      for (const auto& s : plan->sequences) {
        const int32_t token = seeded       ? SampledToken(s.sampling.seed, s.sampling.step)
                              : positional ? (s.cached_tokens + s.num_tokens) % 50 + 1
                                           : 7;
        std::vector<float> prompt_logprobs;
        if (s.prompt_logprobs) {
          for (int32_t t = 0; t < s.num_tokens; ++t) prompt_logprobs.push_back(-(s.cached_tokens + t + 1) / 100.0f);
        }
        r.sequences.push_back({s.seq_id, s.sample ? token : -1, -0.1f, {}, std::move(prompt_logprobs), {}});
      }
      const std::string bytes = transport::EncodeResult(r);
      transport::WireHeader h;
      h.type = static_cast<uint16_t>(transport::MessageType::kStepResult);
      h.step_id = r.step_id;
      h.payload_bytes = bytes.size();
      (void)endpoint_->Send(peer, h, {{bytes.data(), bytes.size()}}, milliseconds(100));
    }
  }
  std::unique_ptr<LoopbackTransport> endpoint_;
  std::string router_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A registration of a one-stage pipeline of 2 layers served by `stage`.
inline v1::RegisterRequest Registration(const std::string& pipeline, const FakeStage& stage, uint64_t epoch) {
  v1::RegisterRequest r;
  auto* id = r.mutable_identity();
  id->set_pipeline(pipeline);
  id->set_num_stages(1);
  id->set_tp_size(1);
  id->set_first_layer(0);
  id->set_last_layer(2);
  id->set_has_embedding(true);
  id->set_has_lm_head(true);
  r.set_model_name("m");
  r.mutable_shape()->set_num_layers(2);
  r.mutable_shape()->set_vocab_size(64);
  r.mutable_shape()->set_hidden_size(8);
  r.mutable_shape()->set_max_position_embeddings(4096);
  r.set_control_address(absl::StrCat("127.0.0.1:", 1000 + pipeline.size()));
  r.set_data_address(stage.address());
  r.set_kv_num_blocks(256);
  r.set_kv_block_size(16);
  r.set_epoch(epoch);
  return r;
}

// A one-stage replica "p0" served by a new FakeStage, registered with
// `dispatcher`'s fleet (vocabulary 128256: Llama 3's BOS fits), once it
// serves (at most 5 s; check Serving()).
inline std::unique_ptr<FakeStage> ServingReplica(Dispatcher* dispatcher, LoopbackNetwork* net) {
  auto stage = std::make_unique<FakeStage>(net, dispatcher->data_address());
  v1::RegisterRequest r = Registration("p0", *stage, 1);
  r.mutable_shape()->set_vocab_size(128256);
  if (!dispatcher->fleet().Register(r).ok()) return stage;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!dispatcher->Serving() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  return stage;
}

}  // namespace strata::router::testing_util

#endif  // STRATA_ROUTER_FAKE_PIPELINE_H_
