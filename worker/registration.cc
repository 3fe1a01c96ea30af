#include "worker/registration.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata::worker {

v1::WorkerIdentity IdentityOf(const std::string& pipeline, const model::StagePlace& place,
                              bool movable_boundaries) {
  v1::WorkerIdentity id;
  id.set_pipeline(pipeline);
  id.set_stage(place.stage());
  id.set_num_stages(place.num_stages());
  id.set_tp_rank(place.tp_rank());
  id.set_tp_size(place.tp_size());
  id.set_first_layer(place.first_layer());
  id.set_last_layer(place.last_layer());
  id.set_has_embedding(place.has_embedding());
  id.set_has_lm_head(place.has_lm_head());
  id.set_starts_at_mlp(place.starts_at_mlp());
  id.set_ends_after_attention(place.ends_after_attention());
  id.set_movable_boundaries(movable_boundaries);
  return id;
}

v1::ModelShape ShapeOf(const model::LlamaConfig& c) {
  v1::ModelShape shape;
  shape.set_hidden_size(c.hidden_size);
  shape.set_intermediate_size(c.intermediate_size);
  shape.set_num_layers(c.num_layers);
  shape.set_num_attention_heads(c.num_heads);
  shape.set_num_key_value_heads(c.num_kv_heads);
  shape.set_head_dim(c.head_dim);
  shape.set_vocab_size(c.vocab_size);
  shape.set_rms_norm_eps(c.rms_norm_eps);
  shape.set_rope_theta(c.rope_theta);
  shape.set_max_position_embeddings(c.max_position_embeddings);
  shape.set_tie_word_embeddings(c.tie_word_embeddings);
  shape.set_bos_token_id(c.bos_token_id);
  for (int64_t e : c.eos_token_ids) shape.add_eos_token_ids(e);
  if (c.rope_scaling) {
    shape.mutable_rope_scaling()->set_factor(c.rope_scaling->factor);
    shape.mutable_rope_scaling()->set_low_freq_factor(c.rope_scaling->low_freq_factor);
    shape.mutable_rope_scaling()->set_high_freq_factor(c.rope_scaling->high_freq_factor);
    shape.mutable_rope_scaling()->set_original_max_position_embeddings(
        c.rope_scaling->original_max_position_embeddings);
  }
  return shape;
}

Registration::Registration(std::string router, v1::RegisterRequest request, std::string log_prefix,
                           std::function<void(const v1::RegisterResponse&)> accepted,
                           std::function<void(const std::string&)> refused,
                           std::function<std::chrono::steady_clock::time_point()> last_heartbeat,
                           std::chrono::milliseconds reregister_after,
                           std::shared_ptr<grpc::ChannelCredentials> credentials)
    : router_(std::move(router)),
      credentials_(credentials ? std::move(credentials) : grpc::InsecureChannelCredentials()),
      request_(std::move(request)), log_prefix_(std::move(log_prefix)),
      accepted_(std::move(accepted)), refused_(std::move(refused)), last_heartbeat_(std::move(last_heartbeat)),
      reregister_after_(reregister_after) {
  thread_ = std::thread([this] { Run(); });
}

Registration::~Registration() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

bool Registration::RegisterOnce(v1::Fleet::Stub* stub) {
  int attempt = 0;
  while (!stop_) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::RegisterResponse resp;
    grpc::Status s = stub->Register(&ctx, request_, &resp);
    if (s.ok()) {
      std::cerr << log_prefix_ << ": registered with the router at " << router_ << " (epoch " << request_.epoch()
                << ")" << std::endl;
      registrations_++;
      accepted_(resp);
      return true;
    }
    if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      std::cerr << log_prefix_ << ": the router refused this worker: " << s.error_message() << std::endl;
      refused_(s.error_message());
      return false;
    }
    if (++attempt % 10 == 1) {
      std::cerr << log_prefix_ << ": router " << router_ << " not reachable yet: " << s.error_message() << std::endl;
    }
    for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void Registration::Run() {
  auto stub = v1::Fleet::NewStub(grpc::CreateChannel(router_, credentials_));
  if (!RegisterOnce(stub.get())) return;
  auto registered_at = std::chrono::steady_clock::now();
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto now = std::chrono::steady_clock::now();
    const auto last = std::max(last_heartbeat_(), registered_at);
    if (now - last < reregister_after_) continue;
    std::cerr << log_prefix_ << ": no heartbeat from the router for "
              << std::chrono::duration_cast<std::chrono::milliseconds>(now - last).count()
              << " ms; registering again" << std::endl;
    if (!RegisterOnce(stub.get())) return;
    registered_at = std::chrono::steady_clock::now();
  }
}

}  // namespace strata::worker
