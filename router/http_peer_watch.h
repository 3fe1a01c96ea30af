// Whether the HTTP client of a request is still there. cpp-httplib 0.11
// (Debian 12's) tells a handler nothing about its connection, and a
// non-streaming reply writes nothing until it is done, so a client that
// hung up would keep its request running to the end. PeerWatch finds the
// connection's socket among this process's descriptors by its two ends
// (the request's local port, remote address and port) once, then asks the
// kernel whether the peer has closed its side (poll's POLLRDHUP), which
// costs one system call. The descriptor stays the request's while its
// handler runs (httplib closes it after), so the number cannot be reused
// under the watch.
#ifndef STRATA_ROUTER_HTTP_PEER_WATCH_H_
#define STRATA_ROUTER_HTTP_PEER_WATCH_H_

#include <string>

namespace strata::router {

class PeerWatch {
 public:
  // The socket whose local port is `local_port` and whose peer is
  // `remote_addr`:`remote_port` (IPv4 or IPv6 text). Not found: a watch
  // that never reports the peer gone.
  static PeerWatch Find(int local_port, const std::string& remote_addr, int remote_port);

  bool found() const { return fd_ >= 0; }
  // The peer closed or reset the connection.
  bool Gone() const;

 private:
  int fd_ = -1;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_HTTP_PEER_WATCH_H_
