// The public strata.v1.Inference API over gRPC. The handlers only
// translate: RequestIntake checks, admits and submits a request, and its
// output chunks become GenerateResponse / ScoreResponse messages.
// Cancellation, deadlines and a client that goes away end the request and
// free its KV blocks at once.
#ifndef STRATA_ROUTER_INFERENCE_SERVICE_H_
#define STRATA_ROUTER_INFERENCE_SERVICE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "router/request_intake.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::router {

class InferenceService : public v1::Inference::Service {
 public:
  // `intake` must outlive the service.
  explicit InferenceService(RequestIntake* intake);

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req, v1::ScoreResponse* resp) override;
  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*, v1::ListModelsResponse* resp) override;
  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req, v1::TokenizeResponse* resp) override;
  grpc::Status Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* req,
                          v1::DetokenizeResponse* resp) override;

 private:
  // True, with `status` set and the request ended, when the client
  // cancelled or the deadline passed.
  static bool ClientEnded(grpc::ServerContext* ctx, RunningRequest* running, grpc::Status* status);

  RequestIntake* intake_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_INFERENCE_SERVICE_H_
