#include "transport/loopback_transport.h"

#include <cstring>

#include "gtest/gtest.h"

namespace strata::transport {
namespace {

using std::chrono::milliseconds;

WireHeader ResultHeader(uint64_t step, size_t bytes) {
  WireHeader h;
  h.type = static_cast<uint16_t>(MessageType::kStepResult);
  h.step_id = step;
  h.payload_bytes = bytes;
  return h;
}

absl::StatusOr<int> ConnectTo(LoopbackTransport& from, const LoopbackTransport& to) {
  auto hp = ParseHostPort(to.address(), "peer");
  if (!hp.ok()) return hp.status();
  return from.Connect(*hp);
}

TEST(LoopbackTransportTest, DeliversValidatedMessagesInOrder) {
  LoopbackNetwork net;
  auto a = net.Listen();
  auto b = net.Listen();
  EXPECT_NE(a->address(), b->address());
  auto peer = ConnectTo(*a, *b);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(*ConnectTo(*a, *b), *peer);  // reused
  const std::string one = "first", two = "second!";
  ASSERT_TRUE(a->Send(*peer, ResultHeader(1, one.size()), {{one.data(), one.size()}}, milliseconds(100)).ok());
  auto pending = a->SendAsync(*peer, ResultHeader(2, two.size()), {{two.data(), 3}, {two.data() + 3, 4}});
  ASSERT_TRUE(pending.ok());
  ASSERT_TRUE(a->Wait(pending->get(), milliseconds(100)).ok());
  auto m1 = b->Receive(milliseconds(100));
  auto m2 = b->Receive(milliseconds(100));
  ASSERT_TRUE(m1.ok() && m2.ok());
  EXPECT_EQ(m1->header.step_id, 1u);
  EXPECT_EQ(std::string(m2->data.begin(), m2->data.end()), two);
  EXPECT_EQ(b->Receive(milliseconds(5)).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(a->stats().messages_sent, 2u);
  EXPECT_EQ(b->stats().messages_received, 2u);
}

TEST(LoopbackTransportTest, RefusesMismatchedLengthsAndCountsMalformedMessages) {
  LoopbackNetwork net;
  auto a = net.Listen();
  auto b = net.Listen();
  const int peer = *ConnectTo(*a, *b);
  const std::string body = "abc";
  EXPECT_EQ(a->Send(peer, ResultHeader(1, 99), {{body.data(), body.size()}}, milliseconds(10)).code(),
            absl::StatusCode::kInvalidArgument);
  WireHeader h = ResultHeader(1, body.size());
  h.version = kWireVersion + 1;
  std::string raw(sizeof(h), '\0');
  std::memcpy(raw.data(), &h, sizeof(h));
  ASSERT_TRUE(net.DeliverRaw(b->address(), raw, body).ok());
  ASSERT_TRUE(net.DeliverRaw(b->address(), raw.substr(1), body).ok());
  EXPECT_EQ(b->stats().messages_rejected, 2u);
  EXPECT_FALSE(b->Receive(milliseconds(5)).ok());
  EXPECT_EQ(net.DeliverRaw("loopback:999", raw, body).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(a->Connect({"loopback", 999}).status().code(), absl::StatusCode::kUnavailable);
}

// Signed data plane (transport/message_auth.h): a receiver with a key takes
// only messages signed with it; anything else is dropped and counted.
TEST(LoopbackTransportTest, AKeyedReceiverDropsWhatDoesNotAuthenticate) {
  LoopbackNetwork net;
  auto a = net.Listen();
  auto b = net.Listen();
  auto stranger = net.Listen();
  const DataKey key = NewDataKey();
  a->SetDataKey(key);
  b->SetDataKey(key);
  const int peer = *ConnectTo(*a, *b);
  const std::string body = "result bytes";
  ASSERT_TRUE(a->Send(peer, ResultHeader(1, body.size()), {{body.data(), body.size()}}, milliseconds(100)).ok());
  auto m = b->Receive(milliseconds(100));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->header.key_id, key.id);
  // Unsigned, signed with another key, stale key id, tampered header, tampered result.
  ASSERT_TRUE(stranger->Send(*ConnectTo(*stranger, *b), ResultHeader(2, body.size()), {{body.data(), body.size()}},
                             milliseconds(100))
                  .ok());
  DataKey other = NewDataKey();
  auto forge = [&](const DataKey& k, uint64_t step, auto&& mutate) {
    WireHeader h = ResultHeader(step, body.size());
    std::string data = body;
    SignMessage(k, &h, {{data.data(), data.size()}});
    mutate(h, data);
    std::string raw(sizeof(h), '\0');
    std::memcpy(raw.data(), &h, sizeof(h));
    return net.DeliverRaw(b->address(), raw, data);
  };
  ASSERT_TRUE(forge(other, 3, [](WireHeader&, std::string&) {}).ok());
  ASSERT_TRUE(forge(other, 4, [&](WireHeader& h, std::string&) { h.key_id = key.id; }).ok());
  ASSERT_TRUE(forge(key, 5, [](WireHeader& h, std::string&) { h.step_id = 6; }).ok());
  ASSERT_TRUE(forge(key, 7, [](WireHeader&, std::string& d) { d[0] ^= 1; }).ok());
  EXPECT_EQ(b->Receive(milliseconds(20)).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(b->stats().messages_unauthenticated, 5u);
  EXPECT_EQ(b->stats().messages_rejected, 5u);
  // And the receiver keeps serving.
  ASSERT_TRUE(forge(key, 8, [](WireHeader&, std::string&) {}).ok());
  m = b->Receive(milliseconds(100));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->header.step_id, 8u);
  // A key of id 0 (a worker not yet registered) takes nothing.
  b->SetDataKey(DataKey{});
  ASSERT_TRUE(a->Send(peer, ResultHeader(9, body.size()), {{body.data(), body.size()}}, milliseconds(100)).ok());
  EXPECT_FALSE(b->Receive(milliseconds(20)).ok());
}

// The router's form: one key per pipeline epoch side by side; a send signs
// with the key its header names; a dropped key's messages are stale.
TEST(LoopbackTransportTest, AKeyRingTakesEachKeyUntilItIsDropped) {
  LoopbackNetwork net;
  auto router = net.Listen();
  auto p0 = net.Listen();
  auto p1 = net.Listen();
  const DataKey k0 = NewDataKey(), k1 = NewDataKey();
  router->SetDataKey(DataKey{});
  router->AddDataKey(k0);
  router->AddDataKey(k1);
  p0->SetDataKey(k0);
  p1->SetDataKey(k1);
  const std::string body = "r";
  for (LoopbackTransport* from : {p0.get(), p1.get()}) {
    ASSERT_TRUE(from->Send(*ConnectTo(*from, *router), ResultHeader(1, 1), {{body.data(), 1}}, milliseconds(100)).ok());
    EXPECT_TRUE(router->Receive(milliseconds(100)).ok());
  }
  // The router signs a plan for p1 with p1's key; p0 cannot read it as its own.
  WireHeader to_p1 = ResultHeader(2, 1);
  to_p1.key_id = k1.id;
  ASSERT_TRUE(router->Send(*ConnectTo(*router, *p1), to_p1, {{body.data(), 1}}, milliseconds(100)).ok());
  EXPECT_TRUE(p1->Receive(milliseconds(100)).ok());
  ASSERT_TRUE(router->Send(*ConnectTo(*router, *p0), to_p1, {{body.data(), 1}}, milliseconds(100)).ok());
  EXPECT_FALSE(p0->Receive(milliseconds(20)).ok());
  // p0's epoch ends.
  router->DropDataKey(k0.id);
  ASSERT_TRUE(p0->Send(*ConnectTo(*p0, *router), ResultHeader(3, 1), {{body.data(), 1}}, milliseconds(100)).ok());
  EXPECT_FALSE(router->Receive(milliseconds(20)).ok());
  EXPECT_EQ(router->stats().messages_unauthenticated, 1u);
}

TEST(LoopbackTransportTest, InjectedFaults) {
  LoopbackNetwork net;
  auto a = net.Listen();
  auto b = net.Listen();
  const int peer = *ConnectTo(*a, *b);
  const std::string body = "x";
  auto send = [&](uint64_t step) {
    return a->Send(peer, ResultHeader(step, 1), {{body.data(), 1}}, milliseconds(20));
  };
  net.DropTo(b->address(), true);  // accepted and lost
  EXPECT_TRUE(send(1).ok());
  EXPECT_FALSE(b->Receive(milliseconds(5)).ok());
  net.DropTo(b->address(), false);
  net.FailSendsTo(b->address(), absl::UnavailableError("peer reset"));
  EXPECT_EQ(send(2).code(), absl::StatusCode::kUnavailable);
  net.FailSendsTo(b->address(), absl::OkStatus());
  net.HangSendsTo(b->address(), true);
  EXPECT_EQ(send(3).code(), absl::StatusCode::kDeadlineExceeded);
  auto hung = a->SendAsync(peer, ResultHeader(4, 1), {{body.data(), 1}});
  ASSERT_TRUE(hung.ok());
  EXPECT_FALSE((*hung)->Done());
  net.HangSendsTo(b->address(), false);
  EXPECT_TRUE((*hung)->Done());
  auto m = b->Receive(milliseconds(20));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->header.step_id, 4u);  // the timed-out send was given up with its PendingSend
  EXPECT_FALSE(b->Receive(milliseconds(5)).ok());
}

TEST(LoopbackTransportTest, InterruptWakesReceiveOncePerCall) {
  LoopbackNetwork net;
  auto a = net.Listen();
  a->Interrupt();
  EXPECT_EQ(a->Receive(milliseconds(1000)).status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(a->Receive(milliseconds(5)).status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(LoopbackTransportTest, DisconnectThenConnectAgain) {
  LoopbackNetwork net;
  auto a = net.Listen();
  auto b = net.Listen();
  const int peer = *ConnectTo(*a, *b);
  a->Disconnect(peer);
  const std::string body = "x";
  EXPECT_EQ(a->Send(peer, ResultHeader(1, 1), {{body.data(), 1}}, milliseconds(5)).code(),
            absl::StatusCode::kUnavailable);
  const int again = *ConnectTo(*a, *b);
  EXPECT_NE(again, peer);
  EXPECT_TRUE(a->Send(again, ResultHeader(2, 1), {{body.data(), 1}}, milliseconds(5)).ok());
  EXPECT_EQ(b->Receive(milliseconds(20))->header.step_id, 2u);
}

TEST(LoopbackTransportTest, PeerGone) {
  LoopbackNetwork net;
  auto a = net.Listen();
  auto b = net.Listen();
  const int peer = *ConnectTo(*a, *b);
  b.reset();
  const std::string body = "x";
  EXPECT_EQ(a->Send(peer, ResultHeader(1, 1), {{body.data(), 1}}, milliseconds(5)).code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace strata::transport
