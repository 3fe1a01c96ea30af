#include "router/fleet_service.h"

#include <iostream>

#include "base/grpc_status.h"
#include "router/pipeline_epoch.h"

namespace strata::router {

grpc::Status FleetService::Register(grpc::ServerContext*, const v1::RegisterRequest* req, v1::RegisterResponse* resp) {
  absl::Status s = fleet_->Register(*req);
  if (!s.ok()) {
    std::cerr << "strata-router: refused a worker: " << s << std::endl;
    return base::ToGrpc(s);
  }
  resp->set_result_address(result_address_);
  resp->set_pipeline_epoch_floor(PipelineEpochFloor());
  return grpc::Status::OK;
}

}  // namespace strata::router
