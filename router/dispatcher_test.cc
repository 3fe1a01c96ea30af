// The router's core without processes: the dispatcher with its fleet and
// drivers over the loopback transport and a fake control plane, and fake
// one-stage pipelines on threads of the test that answer every plan.
// Requests spread over the replicas; a malformed result is dropped and
// counted; a replica whose results stop coming goes down (its requests end
// UNAVAILABLE, its workers are told to abort) and comes back; a replica
// whose member restarts goes down at once. Each replica's KV capacity,
// use, running sequences and generated tokens are series of its own.
// Requests prefer the replica holding their prefix, weighed against load.
// With the data plane signed, every pipeline epoch gets a fresh key.
// Replicas whose stage 0 never answers a connect stall nothing but their
// own warm-up, and a warm-up overtaken by a restart is dropped.
#include "router/dispatcher.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "router/fake_pipeline.h"
#include "transport/loopback_transport.h"

namespace strata::router {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using transport::LoopbackNetwork;
using transport::LoopbackTransport;

using testing_util::FakeControl;
using testing_util::FakeStage;
using testing_util::Registration;

// The value of one series (name and labels as rendered) in a scrape; -1
// when it is absent.
double SeriesValue(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

// The router's data plane where some stage-0 addresses never answer: a
// Connect to a host of 192.0.2.0/24 (TEST-NET, as a SYN sent there waits
// out the connect timeout), or to an address in block_once the first
// time, waits until released (at most 20 s). Everything else is the
// loopback transport's.
class BlackHoleTransport : public transport::Transport {
 public:
  explicit BlackHoleTransport(std::unique_ptr<LoopbackTransport> real) : real_(std::move(real)) {}
  ~BlackHoleTransport() override { Release(); }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  void BlockOnce(const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    block_once_.insert(address);
  }
  int connecting() const { return connecting_.load(); }

  std::string address() const override { return real_->address(); }
  absl::StatusOr<int> Connect(const transport::HostPort& peer) override {
    bool black_hole = peer.host.rfind("192.0.2.", 0) == 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool once = block_once_.erase(peer.ToString()) > 0;
      if (black_hole || once) {
        connecting_++;
        cv_.wait_for(lock, std::chrono::seconds(20), [&] { return released_; });
        connecting_--;
      }
    }
    if (black_hole) return absl::UnavailableError(absl::StrCat("cannot connect to ", peer.ToString(), ": timed out"));
    return real_->Connect(peer);
  }
  void Disconnect(int peer) override { real_->Disconnect(peer); }
  absl::Status Send(int peer, const transport::WireHeader& h, const std::vector<transport::Bytes>& parts,
                    milliseconds timeout) override {
    return real_->Send(peer, h, parts, timeout);
  }
  absl::StatusOr<std::unique_ptr<transport::PendingSend>> SendAsync(int peer, const transport::WireHeader& h,
                                                                   const std::vector<transport::Bytes>& parts) override {
    return real_->SendAsync(peer, h, parts);
  }
  absl::Status Wait(transport::PendingSend* send, milliseconds timeout) override { return real_->Wait(send, timeout); }
  absl::StatusOr<transport::Message> Receive(milliseconds timeout) override { return real_->Receive(timeout); }
  void Recycle(transport::Message&& m) override { real_->Recycle(std::move(m)); }
  void Interrupt() override { real_->Interrupt(); }
  transport::TransportStats stats() const override { return real_->stats(); }
  void SetDataKey(const transport::DataKey& key) override { real_->SetDataKey(key); }
  void AddDataKey(const transport::DataKey& key) override { real_->AddDataKey(key); }
  void DropDataKey(uint64_t id) override { real_->DropDataKey(id); }

 private:
  std::unique_ptr<LoopbackTransport> real_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  std::set<std::string> block_once_;
  std::atomic<int> connecting_{0};
};

class DispatcherTest : public ::testing::Test {
 protected:
  void Start(std::chrono::milliseconds step_timeout = milliseconds(5000), bool sign_data_plane = false,
             bool black_holes = false) {
    DispatcherOptions o;
    o.heartbeat = milliseconds(20);
    o.down_after = milliseconds(5000);
    o.step_timeout = step_timeout;
    o.sign_data_plane = sign_data_plane;
    o.max_migrations = max_migrations_;
    auto control = std::make_unique<FakeControl>();
    control_ = control.get();
    metrics_ = std::make_unique<RouterMetrics>("m");
    auto data_plane = net_.Listen();
    router_transport_ = data_plane.get();
    if (sign_data_plane) data_plane->SetDataKey(transport::DataKey{});  // as router_server does
    if (black_holes) {
      auto wrapped = std::make_unique<BlackHoleTransport>(std::move(data_plane));
      black_holes_ = wrapped.get();
      dispatcher_ = std::make_unique<Dispatcher>(o, metrics_.get(), std::move(wrapped), std::move(control));
      return;
    }
    dispatcher_ = std::make_unique<Dispatcher>(o, metrics_.get(), std::move(data_plane), std::move(control));
  }
  void TearDown() override {
    if (black_holes_) black_holes_->Release();
    dispatcher_.reset();
    stages_.clear();
  }
  FakeStage* AddReplica(const std::string& name, uint64_t epoch = 1) {
    stages_.push_back(std::make_unique<FakeStage>(&net_, dispatcher_->data_address()));
    EXPECT_TRUE(dispatcher_->fleet().Register(Registration(name, *stages_.back(), epoch)).ok());
    return stages_.back().get();
  }
  bool WaitFor(const std::function<bool()>& done, milliseconds budget = milliseconds(5000)) {
    const auto until = Clock::now() + budget;
    while (!done()) {
      if (Clock::now() > until) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }
  // Submits a request and waits for its end.
  RequestStream::Event Run(int32_t max_tokens, std::vector<int32_t> prompt = {1, 2, 3}) {
    SequenceSpec s;
    s.prompt = std::move(prompt);
    s.max_tokens = max_tokens;
    auto stream = std::make_shared<RequestStream>();
    dispatcher_->Submit(std::move(s), stream);
    RequestStream::Event all;
    while (!all.finished) {
      RequestStream::Event e = stream->Next(milliseconds(5000));
      if (!e.finished && e.tokens.empty()) break;  // nothing for 5 s
      all.tokens.insert(all.tokens.end(), e.tokens.begin(), e.tokens.end());
      all.finished = e.finished;
      all.reason = e.reason;
      all.error = e.error;
    }
    return all;
  }

  // Streams a request until `n` more tokens came (or it finished).
  static void ReadTokens(RequestStream* stream, size_t n, std::vector<int32_t>* tokens, RequestStream::Event* last) {
    const size_t want = tokens->size() + n;
    while (tokens->size() < want && !last->finished) {
      *last = stream->Next(milliseconds(5000));
      if (!last->finished && last->tokens.empty()) return;  // nothing for 5 s
      for (const TokenOut& t : last->tokens) tokens->push_back(t.id);
    }
  }
  // The stage that took the most steps since `before` (the one serving a
  // lone request).
  static FakeStage* Busiest(const std::map<FakeStage*, int>& before) {
    FakeStage* best = nullptr;
    int most = -1;
    for (const auto& [s, steps] : before) {
      if (s->steps - steps > most) {
        most = s->steps - steps;
        best = s;
      }
    }
    return best;
  }
  std::map<FakeStage*, int> Steps() const {
    std::map<FakeStage*, int> m;
    for (const auto& s : stages_) m[s.get()] = s->steps;
    return m;
  }

  int max_migrations_ = 3;
  LoopbackNetwork net_;
  LoopbackTransport* router_transport_ = nullptr;  // owned by the dispatcher
  BlackHoleTransport* black_holes_ = nullptr;     // owned by the dispatcher, when started with black holes
  FakeControl* control_ = nullptr;
  std::unique_ptr<RouterMetrics> metrics_;
  std::vector<std::unique_ptr<FakeStage>> stages_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

TEST_F(DispatcherTest, RequestsSpreadOverReplicas) {
  Start();
  FakeStage* a = AddReplica("p0");
  FakeStage* b = AddReplica("p1");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 2; }));
  EXPECT_TRUE(dispatcher_->Serving());
  EXPECT_EQ(dispatcher_->KvCapacityTokens(), 256 * 16);
  // Slow steps, so the requests overlap and the choice by free blocks and
  // queue is what spreads them (an idle pair would tie every time).
  a->delay_ms = 10;
  b->delay_ms = 10;
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] {
      RequestStream::Event e = Run(5);
      if (e.finished && e.reason == Finish::kLength && e.tokens.size() == 5u) good++;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(good.load(), 8);
  EXPECT_GT(a->steps.load(), 1);
  EXPECT_GT(b->steps.load(), 1);
  // The gauges follow at the end of the dispatcher's next turn.
  ASSERT_TRUE(WaitFor([&] {
    const std::string m = metrics_->Render();
    return SeriesValue(m, "strata_pipeline_running_sequences{model=\"m\",pipeline=\"p0\"}") == 0 &&
           SeriesValue(m, "strata_pipeline_running_sequences{model=\"m\",pipeline=\"p1\"}") == 0;
  }));
  const std::string m = metrics_->Render();
  EXPECT_NE(m.find("strata_stage_step_seconds_count{model=\"m\",phase=\"compute\",pipeline=\"p0\",stage=\"0\"}"),
            std::string::npos);
  // Every replica's capacity beside its use, in blocks and tokens, and its
  // own generated tokens: 8 requests x 5 tokens over both.
  double generated = 0;
  for (const std::string p : {"p0", "p1"}) {
    const std::string labels = absl::StrCat("{model=\"m\",pipeline=\"", p, "\"}");
    EXPECT_EQ(SeriesValue(m, "strata_pipeline_kv_capacity_blocks" + labels), 256) << p;
    EXPECT_EQ(SeriesValue(m, "strata_pipeline_kv_capacity_tokens" + labels), 256 * 16) << p;
    EXPECT_EQ(SeriesValue(m, "strata_pipeline_kv_used_blocks" + labels), 0) << p << ": every request finished";
    EXPECT_EQ(SeriesValue(m, "strata_pipeline_kv_used_tokens" + labels), 0) << p;
    EXPECT_EQ(SeriesValue(m, "strata_pipeline_running_sequences" + labels), 0) << p;
    const double g = SeriesValue(m, "strata_pipeline_generation_tokens_total" + labels);
    EXPECT_GT(g, 0) << p;
    generated += g;
  }
  EXPECT_EQ(generated, 8 * 5);
  EXPECT_EQ(SeriesValue(m, "strata_generation_tokens_total{model=\"m\"}"), 8 * 5);
  // Every outcome is a series from the start (the output processor, not
  // used here, counts them), so error ratios are 0, not absent.
  EXPECT_EQ(RouterMetrics::Outcomes().size(), 8u);
  for (const std::string& outcome : RouterMetrics::Outcomes()) {
    EXPECT_EQ(SeriesValue(m, absl::StrCat("strata_requests_total{model=\"m\",outcome=\"", outcome, "\"}")), 0)
        << outcome;
  }
}

TEST_F(DispatcherTest, AReplicaThatIsInUseReportsItsBlocks) {
  Start();
  FakeStage* a = AddReplica("p0");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  a->delay_ms = 200;  // each step is out for a while, its sequence holding its blocks
  SequenceSpec s;
  s.prompt = std::vector<int32_t>(40, 1);  // 3 blocks of 16
  s.max_tokens = 4;
  auto stream = std::make_shared<RequestStream>();
  dispatcher_->Submit(std::move(s), stream);
  const std::string labels = "{model=\"m\",pipeline=\"p0\"}";
  ASSERT_TRUE(WaitFor([&] { return SeriesValue(metrics_->Render(), "strata_pipeline_kv_used_blocks" + labels) == 3; }));
  const std::string m = metrics_->Render();
  EXPECT_EQ(SeriesValue(m, "strata_pipeline_kv_used_tokens" + labels), 3 * 16);
  EXPECT_EQ(SeriesValue(m, "strata_pipeline_running_sequences" + labels), 1);
  EXPECT_EQ(SeriesValue(m, "strata_pipeline_kv_capacity_blocks" + labels), 256);
  ASSERT_TRUE(WaitFor([&] { return stream->finished(); }));
  ASSERT_TRUE(WaitFor([&] { return SeriesValue(metrics_->Render(), "strata_pipeline_kv_used_blocks" + labels) == 0; }));
}

// A request goes to the replica holding its prefix, though an idle tie
// would pick the other; a prompt it does not hold goes by load; and a burst
// sharing the prefix spreads over both (the queue outweighs the hit).
TEST_F(DispatcherTest, RequestsGoWhereTheirPrefixIsCachedWeighedAgainstLoad) {
  Start();
  FakeStage* b = AddReplica("p1");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 1; }));
  const std::vector<int32_t> prefix(64, 5);  // 4 blocks of 16
  auto with = [&](int32_t tail) {
    std::vector<int32_t> p = prefix;
    p.push_back(tail);
    return p;
  };
  ASSERT_EQ(Run(2, with(1)).tokens.size(), 2u);
  FakeStage* a = AddReplica("p0");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 2; }));
  const std::string p0 = "{model=\"m\",pipeline=\"p0\"}", p1 = "{model=\"m\",pipeline=\"p1\"}";
  const int a_steps = a->steps, b_steps = b->steps;
  ASSERT_EQ(Run(2, with(2)).tokens.size(), 2u);
  EXPECT_EQ(a->steps, a_steps);
  EXPECT_GT(b->steps, b_steps);
  std::string m = metrics_->Render();
  EXPECT_EQ(SeriesValue(m, "strata_prefix_cache_queries_tokens_total" + p1), 2 * 65);
  EXPECT_EQ(SeriesValue(m, "strata_prefix_cache_hits_tokens_total" + p1), 64);
  EXPECT_EQ(SeriesValue(m, "strata_prefix_cache_hits_tokens_total" + p0), 0);
  EXPECT_GE(SeriesValue(m, "strata_prefix_cache_blocks" + p1), 4);
  ASSERT_EQ(Run(2, std::vector<int32_t>(40, 9)).tokens.size(), 2u);
  EXPECT_GT(a->steps, a_steps) << "a prompt p1 does not hold goes to the tie's winner";

  a->delay_ms = 10;
  b->delay_ms = 10;
  const int a_before = a->steps;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 12; ++i) {
    SequenceSpec s;
    s.prompt = with(100 + i);
    s.max_tokens = 2;
    streams.push_back(std::make_shared<RequestStream>());
    dispatcher_->Submit(std::move(s), streams.back());
  }
  for (auto& st : streams) ASSERT_TRUE(WaitFor([&] { return st->finished(); }));
  EXPECT_GT(a->steps, a_before) << "one hot prefix pinned the burst to one replica";
  m = metrics_->Render();
  EXPECT_GT(SeriesValue(m, "strata_prefix_cache_hits_tokens_total" + p1), 64);
  ASSERT_TRUE(WaitFor([&] { return SeriesValue(metrics_->Render(), "strata_pipeline_kv_used_blocks" + p1) == 0; }));
}

TEST_F(DispatcherTest, AMalformedResultIsDroppedAndCounted) {
  Start();
  AddReplica("p0");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  transport::WireHeader h;
  h.type = static_cast<uint16_t>(transport::MessageType::kStepResult);
  h.payload_bytes = 5;
  std::string header(sizeof(h), '\0');
  std::memcpy(header.data(), &h, sizeof(h));
  ASSERT_TRUE(net_.DeliverRaw(dispatcher_->data_address(), header, "junk!").ok());
  EXPECT_EQ(Run(3).tokens.size(), 3u);
  ASSERT_TRUE(WaitFor([&] {
    return metrics_->Render().find("strata_router_malformed_results_total{model=\"m\"} 1") != std::string::npos;
  }));
  EXPECT_TRUE(dispatcher_->Serving());
}

TEST_F(DispatcherTest, AReplicaWhoseResultsStopGoesDownAndComesBack) {
  Start(milliseconds(150));
  FakeStage* a = AddReplica("p0");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  a->answer = false;
  RequestStream::Event e = Run(3);
  EXPECT_TRUE(e.finished);
  EXPECT_EQ(e.reason, Finish::kUnavailable);
  EXPECT_NE(e.error.find("got no result within 150 ms"), std::string::npos) << e.error;
  EXPECT_GE(control_->aborts.load(), 1);
  a->answer = true;
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); })) << "the replica warms up again";
  EXPECT_EQ(Run(2).tokens.size(), 2u);
}

TEST_F(DispatcherTest, ARestartedMemberTakesItsReplicaDownAtOnce) {
  Start();
  FakeStage* a = AddReplica("p0", 1);
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  a->answer = false;  // a request in flight when the member restarts
  SequenceSpec s;
  s.prompt = {1};
  s.max_tokens = 4;
  auto stream = std::make_shared<RequestStream>();
  dispatcher_->Submit(s, stream);
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->queued() == 0; }));
  std::this_thread::sleep_for(milliseconds(50));  // the step is in flight, unanswered
  a->answer = true;  // the restarted worker answers what it is sent
  ASSERT_TRUE(dispatcher_->fleet().Register(Registration("p0", *a, 2)).ok());
  ASSERT_TRUE(WaitFor([&] { return stream->finished(); }));
  RequestStream::Event e = stream->Next(milliseconds(10));
  EXPECT_EQ(e.reason, Finish::kUnavailable);
  EXPECT_NE(e.error.find("restarted"), std::string::npos) << e.error;
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  EXPECT_EQ(Run(1).tokens.size(), 1u);
}

// With the data plane signed, each warm-up of a replica (a pipeline epoch)
// hands its members a fresh key before the first step; the replica serves
// with it, and a result signed with an earlier epoch's key is dropped as
// stale.
TEST_F(DispatcherTest, EachPipelineEpochSignsWithAFreshKey) {
  Start(milliseconds(5000), /*sign_data_plane=*/true);
  stages_.push_back(std::make_unique<FakeStage>(&net_, dispatcher_->data_address()));
  FakeStage* a = stages_.back().get();
  std::mutex mu;
  std::vector<transport::DataKey> keys;
  control_->on_data_key = [&](const std::vector<std::string>& members, uint64_t id, const std::string& bytes) {
    EXPECT_EQ(members.size(), 1u);
    transport::DataKey k;
    k.id = id;
    ASSERT_EQ(bytes.size(), k.bytes.size());
    std::memcpy(k.bytes.data(), bytes.data(), k.bytes.size());
    a->transport()->SetDataKey(k);  // what the worker's SetDataKey does
    std::lock_guard<std::mutex> lock(mu);
    keys.push_back(k);
  };
  ASSERT_TRUE(dispatcher_->fleet().Register(Registration("p0", *a, 1)).ok());
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  EXPECT_EQ(Run(3).tokens.size(), 3u);
  // The member restarts: a new epoch, a new key.
  ASSERT_TRUE(dispatcher_->fleet().Register(Registration("p0", *a, 2)).ok());
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return keys.size() == 2 && dispatcher_->Serving();
  }));
  EXPECT_NE(keys[0].id, keys[1].id);
  EXPECT_EQ(Run(2).tokens.size(), 2u);
  // A result of the first epoch (signed with its key) is stale now.
  const uint64_t before = router_transport_->stats().messages_unauthenticated;
  transport::StepResult r;
  r.step_id = 1;
  const std::string body = transport::EncodeResult(r);
  transport::WireHeader h;
  h.type = static_cast<uint16_t>(transport::MessageType::kStepResult);
  h.payload_bytes = body.size();
  transport::SignMessage(keys[0], &h, {{body.data(), body.size()}});
  std::string raw(sizeof(h), '\0');
  std::memcpy(raw.data(), &h, sizeof(h));
  ASSERT_TRUE(net_.DeliverRaw(dispatcher_->data_address(), raw, body).ok());
  EXPECT_EQ(router_transport_->stats().messages_unauthenticated, before + 1);
  EXPECT_EQ(Run(1).tokens.size(), 1u);  // and the replica keeps serving
}

TEST_F(DispatcherTest, NoReplicaAndDrain) {
  Start();
  EXPECT_EQ(Run(1).reason, Finish::kUnavailable);
  AddReplica("p0");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  dispatcher_->Drain(milliseconds(100));
  EXPECT_FALSE(dispatcher_->Serving());
  RequestStream::Event e = Run(1);
  EXPECT_EQ(e.reason, Finish::kUnavailable);
  EXPECT_EQ(e.error, "the router is draining");
}


TEST_F(DispatcherTest, RequestsOfAReplicaThatGoesDownContinueOnAnother) {
  Start(milliseconds(150));
  FakeStage* a = AddReplica("p0");
  FakeStage* b = AddReplica("p1");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 2; }));
  for (FakeStage* s : {a, b}) {
    s->positional = true;
    s->delay_ms = 5;
  }
  SequenceSpec spec;
  spec.prompt = {1, 2, 3};
  spec.max_tokens = 60;
  auto stream = std::make_shared<RequestStream>();
  dispatcher_->Submit(spec, stream);
  std::vector<int32_t> tokens;
  RequestStream::Event e;
  while (tokens.size() < 10) {
    e = stream->Next(milliseconds(5000));
    ASSERT_FALSE(e.finished) << e.error;
    for (const TokenOut& t : e.tokens) tokens.push_back(t.id);
  }
  FakeStage* serving = a->steps.load() > b->steps.load() ? a : b;
  serving->answer = false;  // its replica stops answering mid-request
  while (!e.finished) {
    e = stream->Next(milliseconds(5000));
    for (const TokenOut& t : e.tokens) tokens.push_back(t.id);
  }
  EXPECT_EQ(e.reason, Finish::kLength) << e.error;
  EXPECT_EQ(e.prompt_tokens, 3);
  EXPECT_EQ(e.completion_tokens, 60);
  ASSERT_EQ(tokens.size(), 60u) << "no token lost or repeated";
  for (size_t i = 0; i < tokens.size(); ++i) {
    ASSERT_EQ(tokens[i], static_cast<int32_t>((3 + i) % 50 + 1)) << "token " << i;
  }
  const std::string m = metrics_->Render();
  EXPECT_EQ(SeriesValue(m, "strata_requests_migrated_total{model=\"m\",reason=\"step_timeout\"}"), 1);
  for (const std::string& reason : RouterMetrics::MigrationReasons()) {
    if (reason == "step_timeout") continue;
    EXPECT_EQ(SeriesValue(m, "strata_requests_migrated_total{model=\"m\",reason=\"" + reason + "\"}"), 0) << reason;
  }
  EXPECT_EQ(SeriesValue(m, "strata_migration_resume_seconds_count{model=\"m\"}"), 1);
  EXPECT_EQ(SeriesValue(m, "strata_migrations_failed_total{model=\"m\",cause=\"limit\"}"), 0);
}

// Forty registrations whose stage 0 never answers a connect (the connects
// wait, as on 192.0.2.0/24, until released): requests on the replica that
// is up are served as before, each within a bound far below the 5 s a
// connect waits, health (Serving) stays true, and another replica that
// registers meanwhile comes up. Before, the dispatcher's loop made each
// connect itself, and every request waited behind it.
TEST_F(DispatcherTest, StageZerosThatNeverAnswerStallNothingButTheirOwnWarmUp) {
  Start(milliseconds(5000), false, /*black_holes=*/true);
  AddReplica("p0");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  constexpr int kBlackHoles = 40;
  for (int i = 0; i < kBlackHoles; ++i) {
    v1::RegisterRequest r = Registration(absl::StrCat("hole", i), *stages_[0], 1);
    r.set_data_address(absl::StrCat("192.0.2.1:", 2000 + i));
    ASSERT_TRUE(dispatcher_->fleet().Register(r).ok());
  }
  ASSERT_TRUE(WaitFor([&] { return black_holes_->connecting() == kBlackHoles; }));
  double worst = 0;
  for (int i = 0; i < 20; ++i) {
    const auto start = Clock::now();
    RequestStream::Event e = Run(3);
    worst = std::max(worst, std::chrono::duration<double>(Clock::now() - start).count());
    ASSERT_EQ(e.tokens.size(), 3u) << e.error;
    EXPECT_TRUE(dispatcher_->Serving());
  }
  EXPECT_LT(worst, 1.0) << "a request waited behind the connects";
  std::cerr << "slowest of 20 requests beside " << kBlackHoles << " black-hole connects: " << worst << " s\n";
  AddReplica("p1");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 2; }, milliseconds(3000)))
      << "a new replica waited behind the others' connects";
  EXPECT_EQ(dispatcher_->fleet().state("hole0"), PipelineState::kWarming);
  black_holes_->Release();
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().state("hole0") == PipelineState::kDown; }));
  EXPECT_NE(dispatcher_->fleet().down_reason("hole0").find("cannot reach stage 0"), std::string::npos);
  EXPECT_EQ(Run(2).tokens.size(), 2u);
}

// A warm-up whose connect is still under way when its member restarts
// (another epoch: down, and a new warm-up queued behind it) is dropped when
// the connect returns: the replica warms up once, with the new epoch's
// warm-up, and serves.
TEST_F(DispatcherTest, AWarmUpOvertakenByARestartIsDropped) {
  Start(milliseconds(5000), false, /*black_holes=*/true);
  stages_.push_back(std::make_unique<FakeStage>(&net_, dispatcher_->data_address()));
  FakeStage* a = stages_.back().get();
  black_holes_->BlockOnce(a->address());
  ASSERT_TRUE(dispatcher_->fleet().Register(Registration("p0", *a, 1)).ok());
  ASSERT_TRUE(WaitFor([&] { return black_holes_->connecting() == 1; }));
  ASSERT_TRUE(dispatcher_->fleet().Register(Registration("p0", *a, 2)).ok());
  EXPECT_EQ(dispatcher_->fleet().state("p0"), PipelineState::kDown);
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().state("p0") == PipelineState::kWarming; }));
  black_holes_->Release();
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->Serving(); }));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(a->steps.load(), 1) << "the overtaken warm-up posted a step too";
  EXPECT_EQ(Run(2).tokens.size(), 2u);
}

// A sampled request (temperature 1, a seed) whose replica stops mid-stream
// continues on another with the very tokens it would have had: the worker's
// draw depends on (seed, sampling step) only (kernels/sampling_params.h
// SampleUniform), and the router sends the moved sequence the same seed
// and steps that count the tokens already sent. The fake stages sample as
// such a sampler does; the tokens are compared with an undisturbed run's.
TEST_F(DispatcherTest, ASampledRequestContinuesIdenticallyOnAnotherReplica) {
  Start(milliseconds(150));
  AddReplica("p0");
  AddReplica("p1");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 2; }));
  for (auto& s : stages_) {
    s->seeded = true;
    s->delay_ms = 5;
  }
  SequenceSpec spec;
  spec.prompt = {1, 2, 3};
  spec.max_tokens = 40;
  spec.sampling.temperature = 1.0f;
  spec.sampling.seed = 1234;
  std::vector<int32_t> undisturbed;
  {
    auto stream = std::make_shared<RequestStream>();
    dispatcher_->Submit(spec, stream);
    RequestStream::Event e;
    ReadTokens(stream.get(), 40, &undisturbed, &e);
    ASSERT_EQ(undisturbed.size(), 40u);
  }
  for (size_t i = 0; i < undisturbed.size(); ++i) {
    ASSERT_EQ(undisturbed[i], FakeStage::SampledToken(1234, i)) << "the router's sampling step for token " << i;
  }
  auto stream = std::make_shared<RequestStream>();
  const auto before = Steps();
  dispatcher_->Submit(spec, stream);
  std::vector<int32_t> tokens;
  RequestStream::Event e;
  ReadTokens(stream.get(), 12, &tokens, &e);
  ASSERT_EQ(tokens.size(), 12u) << e.error;
  Busiest(before)->answer = false;  // its replica stops mid-request
  ReadTokens(stream.get(), 40, &tokens, &e);
  while (!e.finished) e = stream->Next(milliseconds(5000));
  EXPECT_EQ(e.reason, Finish::kLength) << e.error;
  EXPECT_EQ(e.completion_tokens, 40);
  EXPECT_EQ(tokens, undisturbed);
  EXPECT_EQ(SeriesValue(metrics_->Render(), "strata_requests_migrated_total{model=\"m\",reason=\"step_timeout\"}"), 1);
}

// With --max-migrations 1, a request that moved once and whose second
// replica goes down too ends with UNAVAILABLE after the tokens it had: each
// of them sent once, in order; it is counted under cause="limit".
TEST_F(DispatcherTest, ARequestMovesAtMostMaxMigrationsTimes) {
  max_migrations_ = 1;
  Start(milliseconds(150));
  for (const std::string p : {"p0", "p1", "p2"}) AddReplica(p);
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 3; }));
  for (auto& s : stages_) {
    s->positional = true;
    s->delay_ms = 5;
  }
  SequenceSpec spec;
  spec.prompt = {1, 2, 3};
  spec.max_tokens = 200;
  auto stream = std::make_shared<RequestStream>();
  auto before = Steps();
  dispatcher_->Submit(spec, stream);
  std::vector<int32_t> tokens;
  RequestStream::Event e;
  ReadTokens(stream.get(), 10, &tokens, &e);
  FakeStage* first = Busiest(before);
  first->answer = false;
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 2; }));
  ReadTokens(stream.get(), 10, &tokens, &e);  // on the second replica now
  ASSERT_FALSE(e.finished) << e.error;
  before = Steps();
  before.erase(first);
  ReadTokens(stream.get(), 5, &tokens, &e);
  Busiest(before)->answer = false;
  while (!e.finished) {
    e = stream->Next(milliseconds(5000));
    for (const TokenOut& t : e.tokens) tokens.push_back(t.id);
  }
  EXPECT_EQ(e.reason, Finish::kUnavailable);
  EXPECT_NE(e.error.find("moved 1 times already"), std::string::npos) << e.error;
  EXPECT_EQ(e.completion_tokens, static_cast<int32_t>(tokens.size()));
  ASSERT_GE(tokens.size(), 25u);
  for (size_t i = 0; i < tokens.size(); ++i) {
    ASSERT_EQ(tokens[i], static_cast<int32_t>((3 + i) % 50 + 1)) << "token " << i;
  }
  const std::string m = metrics_->Render();
  EXPECT_EQ(SeriesValue(m, "strata_requests_migrated_total{model=\"m\",reason=\"step_timeout\"}"), 1);
  EXPECT_EQ(SeriesValue(m, "strata_migrations_failed_total{model=\"m\",cause=\"limit\"}"), 1);
  EXPECT_EQ(SeriesValue(m, "strata_migrations_failed_total{model=\"m\",cause=\"no_replica\"}"), 0);
  EXPECT_TRUE(dispatcher_->Serving()) << "the third replica still serves";
}

// A Score request whose replica stops between its prompt's chunks starts
// over on another and returns every continuation logprob (a Score emits
// nothing before its end, so nothing was sent twice); a replica that stops
// for a member found dead counts under dead_stage.
TEST_F(DispatcherTest, AScoreRequestMovesToo) {
  Start(milliseconds(150));
  AddReplica("p0");
  AddReplica("p1");
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->fleet().pipelines_up() == 2; }));
  for (auto& s : stages_) s->delay_ms = 30;
  SequenceSpec spec;
  spec.prompt = std::vector<int32_t>(700, 5);  // three chunks of at most 256
  spec.continuation = {6, 7, 8};
  spec.score = true;
  auto stream = std::make_shared<RequestStream>();
  const auto before = Steps();
  dispatcher_->Submit(spec, stream);
  ASSERT_TRUE(WaitFor([&] { return Busiest(before)->steps - before.at(Busiest(before)) >= 1; }));
  Busiest(before)->answer = false;
  RequestStream::Event e;
  while (!e.finished) {
    e = stream->Next(milliseconds(5000));
    ASSERT_TRUE(e.finished || e.tokens.empty());
    if (!e.finished && e.tokens.empty() && stream->finished()) break;
  }
  EXPECT_EQ(e.reason, Finish::kStop) << e.error;
  ASSERT_EQ(e.score.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_FLOAT_EQ(e.score[i], -(700 + i) / 100.0f) << i;
  EXPECT_EQ(SeriesValue(metrics_->Render(), "strata_requests_migrated_total{model=\"m\",reason=\"step_timeout\"}"), 1);
}

}  // namespace
}  // namespace strata::router
