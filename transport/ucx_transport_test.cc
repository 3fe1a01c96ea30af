// The UCX data plane between two transports of this process, over shared
// memory and over TCP (UCX_TLS; the shared-memory case keeps tcp in the list
// because UCX's client-server wireup needs a transport that can connect to
// an endpoint, and the test checks that the data lanes are shared memory):
// messages from 1 byte to 8 MiB arrive whole
// and in order; malformed messages are rejected and counted while the
// receiver keeps going; connecting to nobody and sending to a dead peer are
// errors, never hangs; with mutual TLS only peers of the CA get the
// address they need to connect.
#include "transport/ucx_transport.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include "base/local_pki.h"
#include "gtest/gtest.h"

namespace strata::transport {
namespace {

using std::chrono::milliseconds;

// The encoded plan of a one-token step, the plan part of the test messages.
std::string OneTokenPlan() {
  StepPlan plan;
  plan.sequences.resize(1);
  plan.sequences[0].num_tokens = 1;
  plan.token_ids = {5};
  return EncodePlan(plan);
}

class UcxTransportTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { setenv("UCX_TLS", GetParam(), 1); }
  void TearDown() override { unsetenv("UCX_TLS"); }
  static bool SharedMemory() { return std::string(GetParam()).rfind("sm", 0) == 0; }

  std::unique_ptr<UcxTransport> Make() {
    UcxOptions o;
    o.listen = {"127.0.0.1", 0};
    o.peer_failure_detection = !SharedMemory();
    auto t = UcxTransport::Create(o);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }
};

TEST_P(UcxTransportTest, MessagesArriveWholeAndInOrder) {
  auto a = Make(), b = Make();
  ASSERT_TRUE(a && b);
  auto peer = a->Connect(*ParseHostPort(b->address(), "b"));
  ASSERT_TRUE(peer.ok()) << peer.status();
  const std::string lanes = a->DescribePeer(*peer);
  if (SharedMemory()) {
    EXPECT_TRUE(lanes.find("posix") != std::string::npos || lanes.find("sysv") != std::string::npos) << lanes;
  } else {
    EXPECT_EQ(lanes.find("posix"), std::string::npos) << lanes;
  }
  const std::string plan_bytes = OneTokenPlan();
  const std::vector<size_t> sizes = {0, 1, 4096, 16 << 10, 1 << 20, 8 << 20};
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<uint8_t> payload(sizes[i]);
    std::iota(payload.begin(), payload.end(), static_cast<uint8_t>(i));
    WireHeader h;
    h.type = static_cast<uint16_t>(MessageType::kActivations);
    h.step_id = i;
    h.plan_bytes = static_cast<uint32_t>(plan_bytes.size());
    h.payload_bytes = payload.size();
    ASSERT_TRUE(a->Send(*peer, h, {{plan_bytes.data(), plan_bytes.size()}, {payload.data(), payload.size()}},
                        milliseconds(10000))
                    .ok());
    auto m = b->Receive(milliseconds(10000));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->header.step_id, i);
    ASSERT_EQ(m->data.size(), plan_bytes.size() + payload.size());
    EXPECT_EQ(std::memcmp(m->plan(), plan_bytes.data(), plan_bytes.size()), 0);
    EXPECT_TRUE(payload.empty() || std::memcmp(m->payload(), payload.data(), payload.size()) == 0) << sizes[i];
    EXPECT_TRUE(DecodePlan(m->plan(), m->header.plan_bytes).ok());
  }
  EXPECT_EQ(b->stats().messages_received, sizes.size());
  EXPECT_EQ(a->stats().messages_sent, sizes.size());
  // A message without a plan or payload (an empty StepResult body).
  WireHeader empty;
  empty.type = static_cast<uint16_t>(MessageType::kStepResult);
  ASSERT_TRUE(a->Send(*peer, empty, {}, milliseconds(5000)).ok());
  auto m0 = b->Receive(milliseconds(10000));
  ASSERT_TRUE(m0.ok()) << m0.status();
  EXPECT_TRUE(m0->data.empty());
  // A header that does not match the parts is refused before sending.
  WireHeader bad;
  bad.type = static_cast<uint16_t>(MessageType::kStepResult);
  bad.payload_bytes = 10;
  EXPECT_FALSE(a->Send(*peer, bad, {{plan_bytes.data(), 3}}, milliseconds(1000)).ok());
}

// A message handed back with Recycle lends its buffer to the next receive
// of a size it holds, by rendezvous (64 KiB and 1 MiB) and eagerly (2 KiB):
// the bytes are the new message's, never the old one's.
TEST_P(UcxTransportTest, RecycledBuffersServeLaterReceivesWithTheNewBytes) {
  auto a = Make(), b = Make();
  ASSERT_TRUE(a && b);
  auto peer = a->Connect(*ParseHostPort(b->address(), "b"));
  ASSERT_TRUE(peer.ok()) << peer.status();
  const std::string plan_bytes = OneTokenPlan();
  // Returns the message's bytes: the plan, then `size` payload bytes.
  auto send = [&](size_t size, uint8_t seed) {
    std::vector<uint8_t> bytes(plan_bytes.begin(), plan_bytes.end());
    bytes.resize(plan_bytes.size() + size);
    std::iota(bytes.begin() + plan_bytes.size(), bytes.end(), seed);
    WireHeader h;
    h.type = static_cast<uint16_t>(MessageType::kActivations);
    h.plan_bytes = static_cast<uint32_t>(plan_bytes.size());
    h.payload_bytes = size;
    EXPECT_TRUE(a->Send(*peer, h, {{bytes.data(), bytes.size()}}, milliseconds(10000)).ok());
    return bytes;
  };
  for (size_t size : {size_t{2048}, size_t{64} << 10, size_t{1} << 20}) {
    send(size, 1);
    auto first = b->Receive(milliseconds(10000));
    ASSERT_TRUE(first.ok()) << first.status();
    const uint8_t* where = first->data.data();
    b->Recycle(std::move(*first));
    const std::vector<uint8_t> want = send(size - 100, 9);  // a little smaller: the same buffer holds it
    auto second = b->Receive(milliseconds(10000));
    ASSERT_TRUE(second.ok()) << second.status();
    EXPECT_EQ(second->data.data(), where) << size;
    ASSERT_EQ(second->data.size(), want.size());
    EXPECT_EQ(std::memcmp(second->data.data(), want.data(), want.size()), 0) << size;
    b->Recycle(std::move(*second));
  }
}

// A thread waiting in Receive drives the UCX worker itself (the progress
// thread waits meanwhile): other threads' connects and rendezvous-sized
// sends on that transport still complete, a second receiver gets what the
// first does not take, and Interrupt wakes the driving receiver at once.
TEST_P(UcxTransportTest, AReceiverDrivingTheWorkerStallsNoOtherThread) {
  auto a = Make(), b = Make();
  ASSERT_TRUE(a && b);
  auto reply = std::async(std::launch::async, [&] { return a->Receive(milliseconds(20000)); });
  std::this_thread::sleep_for(milliseconds(50));  // it is waiting (driving) now
  auto to_b = a->Connect(*ParseHostPort(b->address(), "b"));
  ASSERT_TRUE(to_b.ok()) << to_b.status();
  const std::string plan_bytes = OneTokenPlan();
  std::vector<uint8_t> big(8 << 20, 7);
  WireHeader h;
  h.type = static_cast<uint16_t>(MessageType::kActivations);
  h.step_id = 1;
  h.plan_bytes = static_cast<uint32_t>(plan_bytes.size());
  h.payload_bytes = big.size();
  ASSERT_TRUE(
      a->Send(*to_b, h, {{plan_bytes.data(), plan_bytes.size()}, {big.data(), big.size()}}, milliseconds(10000))
          .ok());
  auto got = b->Receive(milliseconds(10000));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->data.size(), plan_bytes.size() + big.size());
  EXPECT_EQ(got->data.back(), 7);
  auto to_a = b->Connect(*ParseHostPort(a->address(), "a"));
  ASSERT_TRUE(to_a.ok()) << to_a.status();
  WireHeader r;
  r.type = static_cast<uint16_t>(MessageType::kStepResult);
  r.step_id = 2;
  ASSERT_TRUE(b->Send(*to_a, r, {}, milliseconds(5000)).ok());
  auto m = reply.get();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->header.step_id, 2u);

  // Two receivers at once: one drives, the other waits for what it queues.
  auto first = std::async(std::launch::async, [&] { return a->Receive(milliseconds(10000)); });
  auto second = std::async(std::launch::async, [&] { return a->Receive(milliseconds(10000)); });
  std::this_thread::sleep_for(milliseconds(50));
  for (uint64_t id : {3u, 4u}) {
    r.step_id = id;
    ASSERT_TRUE(b->Send(*to_a, r, {}, milliseconds(5000)).ok());
  }
  auto m1 = first.get(), m2 = second.get();
  ASSERT_TRUE(m1.ok() && m2.ok()) << m1.status() << " " << m2.status();
  EXPECT_EQ(std::set<uint64_t>({m1->header.step_id, m2->header.step_id}), std::set<uint64_t>({3, 4}));

  // Interrupt wakes a receiver asleep on the worker's event fd.
  const auto start = std::chrono::steady_clock::now();
  auto waiting = std::async(std::launch::async, [&] { return a->Receive(milliseconds(20000)); });
  std::this_thread::sleep_for(milliseconds(100));
  a->Interrupt();
  auto interrupted = waiting.get();
  EXPECT_EQ(interrupted.status().code(), absl::StatusCode::kCancelled) << interrupted.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // And a quiet receiver times out on time.
  auto quiet = a->Receive(milliseconds(150));
  EXPECT_EQ(quiet.status().code(), absl::StatusCode::kDeadlineExceeded) << quiet.status();
}

TEST_P(UcxTransportTest, MalformedMessagesAreRejectedAndTheReceiverGoesOn) {
  auto a = Make(), b = Make();
  ASSERT_TRUE(a && b);
  auto peer = a->Connect(*ParseHostPort(b->address(), "b"));
  ASSERT_TRUE(peer.ok()) << peer.status();
  WireHeader h;
  h.type = static_cast<uint16_t>(MessageType::kStepResult);
  h.payload_bytes = 4;
  std::string header(reinterpret_cast<const char*>(&h), sizeof(h));
  // Truncated header; wrong version; lengths that disagree with the data; a
  // large (rendezvous) message with a bad header.
  EXPECT_TRUE(a->SendRawForTest(*peer, header.substr(0, 20), "abcd", milliseconds(5000)).ok());
  WireHeader v = h;
  v.version = 99;
  EXPECT_TRUE(a->SendRawForTest(*peer, std::string(reinterpret_cast<const char*>(&v), sizeof(v)), "abcd",
                                milliseconds(5000))
                  .ok());
  EXPECT_TRUE(a->SendRawForTest(*peer, header, "abcdef", milliseconds(5000)).ok());
  EXPECT_TRUE(a->SendRawForTest(*peer, header, std::string(4 << 20, 'x'), milliseconds(5000)).ok());
  // Then a good one.
  EXPECT_TRUE(a->SendRawForTest(*peer, header, "abcd", milliseconds(5000)).ok());
  auto m = b->Receive(milliseconds(10000));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(std::string(m->data.begin(), m->data.end()), "abcd");
  EXPECT_EQ(b->stats().messages_rejected, 4u);
  EXPECT_EQ(b->Receive(milliseconds(50)).status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_P(UcxTransportTest, DeadPeersAreErrorsNotHangs) {
  auto a = Make();
  ASSERT_TRUE(a);
  int port = 0;
  {
    auto b = Make();
    port = ParseHostPort(b->address(), "b")->port;
    auto peer = a->Connect({"127.0.0.1", port});
    ASSERT_TRUE(peer.ok()) << peer.status();
  }  // b is gone
  // Sending to the dead peer fails within the timeout (the first send may
  // still be buffered; the error shows within a few).
  auto peer = a->Connect({"127.0.0.1", port});
  bool failed = !peer.ok();
  std::vector<uint8_t> payload(1 << 20);
  for (int i = 0; i < 50 && !failed; ++i) {
    WireHeader h;
    h.type = static_cast<uint16_t>(MessageType::kStepResult);
    h.payload_bytes = payload.size();
    failed = !a->Send(*peer, h, {{payload.data(), payload.size()}}, milliseconds(2000)).ok();
  }
  EXPECT_TRUE(failed);
}

// With the control plane's mutual TLS, a transport hands its UCX worker
// address only to a peer with a certificate of the CA: a plaintext one or
// one of another CA cannot connect; a peer of the CA can, and its
// messages arrive.
TEST_P(UcxTransportTest, TheWorkerAddressGoesOnlyToPeersOfTheCa) {
  const std::string tmp = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  for (const char* pki : {"/fleet", "/stranger"}) {
    ASSERT_TRUE(base::MakeLocalPki(tmp + pki, pki, {{"worker", "strata-worker"}}).ok());
  }
  auto load = [&](const std::string& pki) {
    return *base::LoadTls({tmp + pki + "/ca.crt", tmp + pki + "/worker.crt", tmp + pki + "/worker.key"}, "mtls",
                          true);
  };
  const base::TlsMaterial fleet = load("/fleet"), stranger = load("/stranger");
  auto make = [&](const base::TlsMaterial* tls) {
    UcxOptions o;
    o.listen = {"127.0.0.1", 0};
    o.peer_failure_detection = !SharedMemory();
    o.connect_timeout = milliseconds(2000);
    o.tls = tls;
    return std::move(*UcxTransport::Create(o));
  };
  auto server = make(&fleet), member = make(&fleet), plain = make(nullptr), foreign = make(&stranger);
  const HostPort to = *ParseHostPort(server->address(), "server");
  EXPECT_EQ(plain->Connect(to).status().code(), absl::StatusCode::kUnavailable);
  auto refused = foreign->Connect(to);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("mutual TLS"), std::string::npos) << refused.status();
  auto peer = member->Connect(to);
  ASSERT_TRUE(peer.ok()) << peer.status();
  WireHeader h;
  h.type = static_cast<uint16_t>(MessageType::kStepResult);
  h.payload_bytes = 4;
  ASSERT_TRUE(member->Send(*peer, h, {{"abcd", 4}}, milliseconds(5000)).ok());
  auto m = server->Receive(milliseconds(5000));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(std::string(m->data.begin(), m->data.end()), "abcd");
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxTransportTest, ::testing::Values("sm,tcp,self", "tcp,self"),
                         [](const auto& info) { return std::string(info.index == 0 ? "SharedMemory" : "Tcp"); });


// The TCP sockets this process listens on, as "ADDR:PORT" in hex as
// /proc/net/tcp writes them (0100007F is 127.0.0.1).
std::vector<std::string> OwnListeners() {
  std::set<std::string> inodes;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      char link[256];
      const std::string path = std::string("/proc/self/fd/") + e->d_name;
      const ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
      if (n <= 0) continue;
      link[n] = 0;
      std::string l(link);
      if (l.rfind("socket:[", 0) == 0) inodes.insert(l.substr(8, l.size() - 9));
    }
    closedir(d);
  }
  std::vector<std::string> out;
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // header
  while (std::getline(tcp, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
    f >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
    if (st == "0A" && inodes.count(inode)) out.push_back(local);
  }
  return out;
}

// Told to listen on loopback, UCX's TCP transport listens there only (not on
// the host's other interfaces).
TEST(UcxListenTest, LoopbackStaysOnLoopback) {
  setenv("UCX_TLS", "tcp,self", 1);
  UcxOptions o;
  o.listen = {"127.0.0.1", 0};
  auto t = UcxTransport::Create(o);
  unsetenv("UCX_TLS");
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<std::string> listeners = OwnListeners();
  EXPECT_GE(listeners.size(), 2u) << "the address server and UCX's TCP listener";
  for (const std::string& l : listeners) {
    EXPECT_EQ(l.substr(0, 8), "0100007F") << "a listener outside loopback: " << l;
  }
}

}  // namespace
}  // namespace strata::transport
