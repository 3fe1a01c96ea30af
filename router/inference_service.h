// The public strata.v1.Inference API over gRPC. The handlers only
// translate: a request is validated (router/validation), submitted to the
// dispatcher, and its events go through an OutputProcessor into
// GenerateResponse / ScoreResponse messages. Cancellation, deadlines and a
// client that goes away end the request and free its KV blocks at once.
#ifndef STRATA_ROUTER_INFERENCE_SERVICE_H_
#define STRATA_ROUTER_INFERENCE_SERVICE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"
#include "router/dispatcher.h"
#include "router/output_processor.h"
#include "router/router_metrics.h"
#include "router/validation.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::router {

class InferenceService : public v1::Inference::Service {
 public:
  // `dispatcher` and `metrics` must outlive the service; `tokenizer` may be
  // null (token ids only).
  InferenceService(Dispatcher* dispatcher, RouterMetrics* metrics, std::unique_ptr<model::Tokenizer> tokenizer);

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req, v1::ScoreResponse* resp) override;
  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*, v1::ListModelsResponse* resp) override;
  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req, v1::TokenizeResponse* resp) override;
  grpc::Status Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* req,
                          v1::DetokenizeResponse* resp) override;

 private:
  absl::StatusOr<Limits> CurrentLimits(const std::string& requested_model) const;
  // Admission checks shared by Generate and Score.
  grpc::Status Admit();
  // Cancels a request and waits (bounded) until the dispatcher ended it.
  void CancelAndWait(uint64_t handle, RequestStream* stream);
  // The next events of `stream` as the client's output; false with
  // `status` set when the client cancelled or the deadline passed (the
  // request is ended then).
  bool NextChunk(grpc::ServerContext* ctx, uint64_t handle, RequestStream* stream, OutputProcessor* output,
                 OutputChunk* chunk, grpc::Status* status);

  Dispatcher* dispatcher_;
  RouterMetrics* metrics_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
};

}  // namespace strata::router

#endif  // STRATA_ROUTER_INFERENCE_SERVICE_H_
