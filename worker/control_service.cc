#include "worker/control_service.h"

namespace strata::worker {

namespace {

uint64_t Count(const prometheus::Counter* c) { return static_cast<uint64_t>(c->Value()); }

}  // namespace

void ControlService::set_state(State state) {
  std::lock_guard<std::mutex> lock(state_mu_);
  state_ = state;
  if (on_state_) on_state_(state);
}

grpc::Status ControlService::Health(grpc::ServerContext*, const v1::HealthRequest*, v1::HealthResponse* r) {
  last_health_ = std::chrono::steady_clock::now();
  r->set_state(state_.load());
  r->set_epoch(facts_.epoch);
  r->set_steps_completed(Count(metrics_->prefill_steps) + Count(metrics_->decode_steps));
  return grpc::Status::OK;
}

grpc::Status ControlService::Stats(grpc::ServerContext*, const v1::StatsRequest*, v1::StatsResponse* r) {
  *r->mutable_identity() = facts_.identity;
  r->set_epoch(facts_.epoch);
  r->set_prefill_steps(Count(metrics_->prefill_steps));
  r->set_decode_steps(Count(metrics_->decode_steps));
  r->set_failed_steps(Count(metrics_->failed_steps));
  r->set_rows(Count(metrics_->rows));
  r->set_step_seconds(metrics_->SumOf(metrics_->prefill_step_seconds) + metrics_->SumOf(metrics_->decode_step_seconds));
  r->set_activation_bytes_sent(Count(metrics_->activation_bytes_sent));
  r->set_activation_bytes_received(Count(metrics_->activation_bytes_received));
  r->set_messages_rejected(Count(metrics_->messages_rejected));
  r->set_steps_aborted(Count(metrics_->steps_aborted));
  r->set_kv_blocks_total(facts_.kv_blocks);
  r->set_kv_blocks_used(static_cast<int64_t>(metrics_->kv_blocks_used->Value()));
  r->set_weight_bytes(facts_.weight_bytes);
  return grpc::Status::OK;
}

grpc::Status ControlService::Drain(grpc::ServerContext*, const v1::DrainRequest*, v1::DrainResponse* r) {
  set_state(v1::HealthResponse::DRAINING);
  r->set_queued_steps(0);
  return grpc::Status::OK;
}

grpc::Status ControlService::Abort(grpc::ServerContext*, const v1::AbortRequest* req, v1::AbortResponse* r) {
  if (req->sequence_ids_size() > 100000) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sequence_ids: more than 100000 ids");
  }
  aborts_->Add(req->up_to_step_id(), req->sequence_ids());
  if (on_abort_) on_abort_();
  r->set_steps_dropped(0);  // counted as they are dropped (Stats.steps_aborted)
  return grpc::Status::OK;
}

grpc::Status ControlService::SetDataKey(grpc::ServerContext*, const v1::SetDataKeyRequest* req,
                                        v1::SetDataKeyResponse*) {
  if (!on_data_key_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this worker's data plane is not signed (no --mtls-*)");
  }
  if (req->key_id() == 0 || req->key().size() != 32) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "key_id must be nonzero and key 32 bytes");
  }
  on_data_key_(req->key_id(), req->key());
  return grpc::Status::OK;
}

}  // namespace strata::worker
