// The data plane's wire format. Every message is one UCX active message
// whose AM header is a WireHeader and whose data is the encoded plan
// followed by the payload (raw little-endian tensors or results):
//
//   StepPlan     router -> every rank of stage 0     plan, no payload
//   Activations  stage i rank r -> stage i+1 rank r  plan, hidden [rows, hidden] f32
//   StepResult   last stage rank 0 -> router         no plan, encoded StepResult
//
// The plan travels with the activations, so every stage knows the step
// without asking anyone. Everything is checked on receipt (magic, version,
// type, lengths, limits) before a byte of it is used: a malformed message is
// rejected and counted, and the receiver keeps running.
#ifndef STRATA_TRANSPORT_WIRE_H_
#define STRATA_TRANSPORT_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::transport {

inline constexpr uint32_t kWireMagic = 0x41525453;  // "STRA" little-endian
// 2: StepResult carries a status code and per-stage timings; plans carry
// the timings of the stages they passed through. 3: the header carries a
// key id and an HMAC-SHA256 tag (transport/message_auth.h).
inline constexpr uint16_t kWireVersion = 3;

enum class MessageType : uint16_t {
  kStepPlan = 1,
  kActivations = 2,
  kStepResult = 3,
};
const char* MessageTypeName(MessageType type);

// Fixed-size, little-endian. Versioned: a receiver refuses any other version.
struct WireHeader {
  uint32_t magic = kWireMagic;
  uint16_t version = kWireVersion;
  uint16_t type = 0;            // MessageType
  uint64_t step_id = 0;
  uint64_t epoch = 0;           // the router's epoch of this pipeline (router/pipeline_epoch.h), passed on
  uint32_t plan_bytes = 0;      // encoded StepPlan at the start of the data
  int16_t src_stage = -1;       // -1: the router
  int16_t src_rank = -1;
  uint64_t payload_bytes = 0;   // bytes after the plan
  uint64_t key_id = 0;          // the data key the tag was made with (0: unsigned)
  uint8_t mac[32] = {};         // HMAC-SHA256 over the header (this field zero), the plan and a result
};
static_assert(sizeof(WireHeader) == 80, "WireHeader is part of the wire format");

// Limits on what a receiver accepts.
inline constexpr uint32_t kMaxPlanBytes = 64u << 20;
inline constexpr uint64_t kMaxPayloadBytes = 4ull << 30;
inline constexpr int64_t kMaxSequencesPerStep = 4096;
inline constexpr int64_t kMaxRowsPerStep = 1 << 16;
inline constexpr int64_t kMaxBlockTable = 1 << 20;
inline constexpr int32_t kMaxTopLogprobs = 20;
inline constexpr int64_t kMaxStageTimings = 1024;  // one per stage
inline constexpr int64_t kMaxErrorBytes = 1 << 16;

// Checks a received header against the data length (plan + payload) and the
// limits. INVALID_ARGUMENT naming what is wrong.
absl::Status ValidateHeader(const void* header, size_t header_length, size_t data_length);

// Sampling parameters as they travel (the worker turns them into its
// backend's SamplingParams; the transport depends on no kernel code).
struct Sampling {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // (0, 1]
  uint64_t seed = 0;
  uint64_t step = 0;         // tokens generated so far for this sequence
};

// One sequence's part of a step.
struct PlanSequence {
  uint64_t seq_id = 0;
  int32_t num_tokens = 0;       // new tokens this step
  int32_t cached_tokens = 0;    // tokens already in the KV cache
  int64_t position_offset = 0;  // RoPE position of cache index 0
  std::vector<int32_t> block_table;
  // Sample a token from the last new row (prefill done, or decoding).
  bool sample = false;
  Sampling sampling;
  // -1: no logprobs; 0: the chosen token's; n > 0: also the top n.
  int32_t logprobs = -1;
  // Return log p(token[i + 1] | ...) for every new row i (Score); the row
  // after the last new token uses next_token_id when it is >= 0.
  bool prompt_logprobs = false;
  int32_t next_token_id = -1;
};

// Where a step's time went on one stage (its rank 0, which speaks for the
// stage), in seconds: waiting in the receive queue, the stage's forward
// pass without its all-reduces, the all-reduces, and sending (waiting for
// the previous send to the next stage and posting this one, or encoding
// and posting the result). Every value is finite and >= 0.
struct StageTiming {
  int32_t stage = 0;
  float queue_seconds = 0;
  float compute_seconds = 0;
  float allreduce_seconds = 0;
  float send_seconds = 0;
};

struct StepPlan {
  uint64_t step_id = 0;
  bool return_logits = false;  // the full logits of sampled rows (debugging, parity tests)
  // Every movable stage boundary (worker --movable-boundaries) at its other
  // place this step: a boundary moves across the MLP block next to it, which
  // both stages beside it hold and which keeps no state, so the router may
  // move it step by step to balance the stages (router/boundary_balancer.h).
  // A stage that holds no movable boundary refuses a plan that sets it.
  bool shift_boundaries = false;
  std::vector<PlanSequence> sequences;
  std::vector<int32_t> token_ids;  // one per new row, sequence after sequence
  // The stages this step passed through so far, in order (empty from the
  // router); each stage appends its own before forwarding.
  std::vector<StageTiming> timings;

  int64_t NumRows() const;
};

// Encodes, zero-padded to a multiple of 8 bytes so that a payload after it
// stays aligned; Decode checks every count and length against the limits and the
// buffer (INVALID_ARGUMENT naming the field), and that token_ids has one id
// per row. Ids against the vocabulary and block tables against the pool are
// the worker's to check.
std::string EncodePlan(const StepPlan& plan);
absl::StatusOr<StepPlan> DecodePlan(const uint8_t* data, size_t size);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
};

struct SequenceResult {
  uint64_t seq_id = 0;
  int32_t token = -1;  // sampled token; -1 when the sequence did not sample
  float logprob = 0;   // of `token`, when asked
  std::vector<TokenLogprob> top;           // when asked, best first
  std::vector<float> prompt_logprobs;      // when asked
  std::vector<float> logits;               // when the plan asked for them
};

struct StepResult {
  uint64_t step_id = 0;
  // The step's outcome as a gRPC / absl status code (0: OK) and, when it
  // failed, the message saying where and why. The router acts on the code
  // (UNAVAILABLE and DEADLINE_EXCEEDED take the pipeline down; any other
  // failure ends the step's sequences), never on the text. A decoded result
  // has code 0 exactly when error is empty.
  int32_t code = 0;
  std::string error;
  std::vector<StageTiming> timings;  // every stage the step passed, in order
  std::vector<SequenceResult> sequences;

  bool ok() const { return code == 0; }
  // Sets code and error from a failed status (OK clears both).
  void SetStatus(const absl::Status& status);
  absl::Status status() const;
};

std::string EncodeResult(const StepResult& result);
absl::StatusOr<StepResult> DecodeResult(const uint8_t* data, size_t size);

}  // namespace strata::transport

#endif  // STRATA_TRANSPORT_WIRE_H_
