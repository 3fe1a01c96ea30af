// The Fleet service workers register with (strata.v1.Fleet): translates a
// RegisterRequest into Fleet::Register and answers with the address the
// worker sends results to.
#ifndef STRATA_ROUTER_FLEET_SERVICE_H_
#define STRATA_ROUTER_FLEET_SERVICE_H_

#include <string>

#include "router/fleet.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata::router {

class FleetService : public v1::Fleet::Service {
 public:
  // `fleet` must outlive the service.
  FleetService(Fleet* fleet, std::string result_address) : fleet_(fleet), result_address_(std::move(result_address)) {}

  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest* req, v1::RegisterResponse* resp) override;

 private:
  Fleet* fleet_;
  const std::string result_address_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_FLEET_SERVICE_H_
