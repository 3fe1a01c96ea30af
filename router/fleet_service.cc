#include "router/fleet_service.h"

#include <iostream>

#include "base/grpc_status.h"

namespace strata::router {

grpc::Status FleetService::Register(grpc::ServerContext*, const v1::RegisterRequest* req, v1::RegisterResponse* resp) {
  absl::Status s = fleet_->Register(*req);
  if (!s.ok()) {
    std::cerr << "strata-router: refused a worker: " << s << std::endl;
    return base::ToGrpc(s);
  }
  resp->set_result_address(result_address_);
  if (data_key_.id != 0) {
    resp->set_data_key_id(data_key_.id);
    resp->set_data_key(std::string(data_key_.bytes.begin(), data_key_.bytes.end()));
  }
  return grpc::Status::OK;
}

}  // namespace strata::router
