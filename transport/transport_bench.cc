// The data plane's speed: one-way latency (half a ping-pong) and streaming
// bandwidth of activation-sized messages (16 KiB to 4 MiB) between two
// processes through UcxTransport, the code path the workers use (a send
// posted to the progress thread, completion awaited, the message validated
// and queued on the receiver; streaming keeps up to 4 sends in flight with
// SendAsync). tools/transport_bench.sh runs it beside
// Debian's ucx_perftest (ucp_am_lat / ucp_am_bw) on the same UCX_TLS.
//
// usage: transport_bench [--sizes 16384,65536,...] [--peer-errors true|false] [--bandwidth false]
// Prints one JSON object per size: {"size", "lat_us", "bw_mbps"}.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "transport/ucx_transport.h"

namespace {

using strata::transport::Bytes;
using strata::transport::MessageType;
using strata::transport::UcxOptions;
using strata::transport::UcxTransport;
using strata::transport::WireHeader;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t kEcho = 1, kAck = 2, kQuit = 3;
// Sends in flight while streaming (a stage overlapping its sends with
// compute has one or two; ucx_perftest keeps a window too).
constexpr int kWindow = 4;

void WriteString(int fd, const std::string& s) {
  const uint32_t n = static_cast<uint32_t>(s.size());
  (void)!write(fd, &n, sizeof(n));
  (void)!write(fd, s.data(), n);
}

std::string ReadString(int fd) {
  uint32_t n = 0;
  if (read(fd, &n, sizeof(n)) != sizeof(n)) return "";
  std::string s(n, '\0');
  size_t got = 0;
  while (got < n) {
    const ssize_t r = read(fd, &s[got], n - got);
    if (r <= 0) return "";
    got += static_cast<size_t>(r);
  }
  return s;
}

// Messages shaped like activations: a small plan (the part the MAC
// covers) and the payload; src_rank carries the bench's own flag.
constexpr size_t kPlanBytes = 256;
const std::vector<uint8_t> kPlan(kPlanBytes, 0x11);

WireHeader Header(size_t bytes, uint64_t flag) {
  WireHeader h;
  h.type = static_cast<uint16_t>(MessageType::kActivations);
  h.plan_bytes = kPlanBytes;
  h.payload_bytes = bytes;
  h.src_rank = static_cast<int16_t>(flag);
  return h;
}

int Fail(const std::string& what) {
  std::cerr << "transport_bench: " << what << "\n";
  return 1;
}

// The peer: echoes pings, acknowledges the end of a stream, leaves when told.
int Echo(int to_parent, int from_parent, const UcxOptions& options, const strata::transport::DataKey* key) {
  auto t = UcxTransport::Create(options);
  if (!t.ok()) return Fail(std::string(t.status().message()));
  if (key != nullptr) (*t)->SetDataKey(*key);
  WriteString(to_parent, (*t)->address());
  auto parent = strata::transport::ParseHostPort(ReadString(from_parent), "parent");
  if (!parent.ok()) return Fail("no parent address");
  auto peer = (*t)->Connect(*parent);
  if (!peer.ok()) return Fail(std::string(peer.status().message()));
  std::vector<uint8_t> reply;
  while (true) {
    auto m = (*t)->Receive(milliseconds(20000));
    if (!m.ok() || m->header.src_rank == kQuit) return 0;  // the parent is done
    if (m->header.src_rank == kEcho) {
      // The reply goes from a buffer of its own, as ucx_perftest's does:
      // not from the bytes just received, whose cache lines this core has
      // just written (reading those from the other core cost 4-5 us more
      // per 64 KiB on the Xeon VM, a cost of where the data was produced,
      // not of the transport).
      if (reply.size() != m->data.size()) reply.assign(m->data.begin(), m->data.end());
      if (!(*t)->Send(*peer, Header(m->header.payload_bytes, 0), {{reply.data(), reply.size()}},
                      milliseconds(10000))
               .ok()) {
        return Fail("echo failed");
      }
    } else if (m->header.src_rank == kAck) {
      if (!(*t)->Send(*peer, Header(0, 0), {{kPlan.data(), kPlan.size()}}, milliseconds(10000)).ok()) {
        return Fail("ack failed");
      }
    }
    (*t)->Recycle(std::move(*m));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {8 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20};
  UcxOptions options;
  options.listen = {"127.0.0.1", 0};
  bool bandwidth = true;  // --bandwidth false: latency only (for profiling one phase)
  bool mac = false;  // --mac true: both ends sign and verify every message (HMAC-SHA256)
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--sizes") {
      sizes.clear();
      for (absl::string_view s : absl::StrSplit(value, ',')) {
        int64_t v = 0;
        if (!absl::SimpleAtoi(s, &v) || v < 0 || v > (int64_t{1} << 30)) return Fail("bad --sizes");
        sizes.push_back(v);
      }
    } else if (flag == "--bandwidth") {
      bandwidth = value != "false";
    } else if (flag == "--mac") {
      mac = value == "true";
    } else if (flag == "--peer-errors") {
      options.peer_failure_detection = value == "true";
    } else {
      return Fail("unknown flag " + flag);
    }
  }
  int down[2], up[2];
  if (pipe(down) != 0 || pipe(up) != 0) return Fail("pipe");
  const strata::transport::DataKey key = strata::transport::NewDataKey();  // before the fork: both ends share it
  const pid_t child = fork();
  if (child == 0) _exit(Echo(up[1], down[0], options, mac ? &key : nullptr));

  auto t = UcxTransport::Create(options);
  if (!t.ok()) return Fail(std::string(t.status().message()));
  if (mac) (*t)->SetDataKey(key);
  WriteString(down[1], (*t)->address());
  auto child_address = strata::transport::ParseHostPort(ReadString(up[0]), "child");
  if (!child_address.ok()) return Fail("no child address");
  auto peer = (*t)->Connect(*child_address);
  if (!peer.ok()) return Fail(std::string(peer.status().message()));

  // The first size warms up by time as well as by count: a new
  // connection's first tens of milliseconds run slower (UCX is still wiring
  // up its lanes), and that must not land in its figure.
  const auto warm_until = Clock::now() + milliseconds(300);
  for (int64_t size : sizes) {
    // One contiguous buffer, plan then payload, as a worker forwards its
    // activations (two parts make UCX pick slower protocols).
    std::vector<uint8_t> message(kPlan);
    message.resize(kPlanBytes + size, 0x5a);
    const int lat_iters = static_cast<int>(std::clamp<int64_t>((int64_t{256} << 20) / std::max<int64_t>(size, 1), 100, 2000));
    const int bw_iters = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 30) / std::max<int64_t>(size, 1), 200, 5000));
    auto ping = [&]() -> bool {
      if (!(*t)->Send(*peer, Header(size, kEcho), {{message.data(), message.size()}}, milliseconds(10000))
               .ok()) {
        return false;
      }
      auto m = (*t)->Receive(milliseconds(10000));
      if (!m.ok()) return false;
      (*t)->Recycle(std::move(*m));  // as the workers do: the buffer serves the next receive
      return true;
    };
    for (int i = 0; i < 20 || Clock::now() < warm_until; ++i) {
      if (!ping()) return Fail("warm-up failed");
    }
    auto start = Clock::now();
    for (int i = 0; i < lat_iters; ++i) {
      if (!ping()) return Fail("ping failed");
    }
    const double lat_us = std::chrono::duration<double, std::micro>(Clock::now() - start).count() / lat_iters / 2;
    if (!bandwidth) {
      std::cout << "{\"size\": " << size << ", \"mac\": " << (mac ? "true" : "false") << ", \"lat_us\": " << lat_us
                << "}" << std::endl;
      continue;
    }
    start = Clock::now();
    std::deque<std::unique_ptr<strata::transport::PendingSend>> window;
    for (int i = 0; i < bw_iters; ++i) {
      const uint64_t flag = i + 1 == bw_iters ? kAck : 0;
      if (static_cast<int>(window.size()) == kWindow) {
        if (!(*t)->Wait(window.front().get(), milliseconds(10000)).ok()) return Fail("stream send failed");
        window.pop_front();
      }
      auto p = (*t)->SendAsync(*peer, Header(size, flag), {{message.data(), message.size()}});
      if (!p.ok()) return Fail("stream send failed");
      window.push_back(std::move(*p));
    }
    while (!window.empty()) {
      if (!(*t)->Wait(window.front().get(), milliseconds(10000)).ok()) return Fail("stream send failed");
      window.pop_front();
    }
    if (!(*t)->Receive(milliseconds(30000)).ok()) return Fail("no ack");
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    const double mbps = static_cast<double>(size) * bw_iters / secs / 1e6;
    std::cout << "{\"size\": " << size << ", \"mac\": " << (mac ? "true" : "false") << ", \"lat_us\": " << lat_us << ", \"bw_mbps\": " << mbps << "}" << std::endl;
  }
  (void)(*t)->Send(*peer, Header(0, kQuit), {{kPlan.data(), kPlan.size()}}, milliseconds(1000));
  t->reset();
  int status = 0;
  waitpid(child, &status, 0);
  return 0;
}
