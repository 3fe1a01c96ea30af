#include "transport/wire.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace strata::transport {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian");

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(&out_[at], &v, sizeof(T));
  }
  template <typename T>
  void PutVector(const std::vector<T>& v) {
    Put<uint32_t>(static_cast<uint32_t>(v.size()));
    const size_t at = out_.size();
    out_.resize(at + v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(&out_[at], v.data(), v.size() * sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), left_(size) {}

  template <typename T>
  bool Get(T* v) {
    if (left_ < sizeof(T)) return false;
    std::memcpy(v, p_, sizeof(T));
    p_ += sizeof(T);
    left_ -= sizeof(T);
    return true;
  }
  template <typename T>
  bool GetVector(std::vector<T>* v, uint64_t max) {
    uint32_t n = 0;
    if (!Get(&n) || n > max || left_ < static_cast<uint64_t>(n) * sizeof(T)) return false;
    v->resize(n);
    if (n > 0) std::memcpy(v->data(), p_, n * sizeof(T));
    p_ += n * sizeof(T);
    left_ -= n * sizeof(T);
    return true;
  }
  bool GetString(std::string* s, uint64_t max) {
    uint32_t n = 0;
    if (!Get(&n) || n > max || left_ < n) return false;
    s->assign(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    left_ -= n;
    return true;
  }
  size_t left() const { return left_; }

 private:
  const uint8_t* p_;
  size_t left_;
};

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed data-plane message: ", what));
}

void PutTimings(Writer& w, const std::vector<StageTiming>& timings) {
  w.Put<uint32_t>(static_cast<uint32_t>(timings.size()));
  for (const StageTiming& t : timings) {
    w.Put<int32_t>(t.stage);
    w.Put<float>(t.queue_seconds);
    w.Put<float>(t.compute_seconds);
    w.Put<float>(t.allreduce_seconds);
    w.Put<float>(t.send_seconds);
  }
}

absl::Status GetTimings(Reader& r, std::vector<StageTiming>* timings) {
  uint32_t n = 0;
  if (!r.Get(&n)) return Bad("truncated in the stage timings");
  if (n > kMaxStageTimings) return Bad(absl::StrCat(n, " stage timings, over the limit of ", kMaxStageTimings));
  timings->resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    StageTiming& t = (*timings)[i];
    if (!r.Get(&t.stage) || !r.Get(&t.queue_seconds) || !r.Get(&t.compute_seconds) || !r.Get(&t.allreduce_seconds) ||
        !r.Get(&t.send_seconds)) {
      return Bad(absl::StrCat("truncated in stage timing ", i));
    }
    if (t.stage < 0 || t.stage >= kMaxStageTimings) return Bad(absl::StrCat("stage timing ", i, ": stage ", t.stage));
    for (float v : {t.queue_seconds, t.compute_seconds, t.allreduce_seconds, t.send_seconds}) {
      if (!std::isfinite(v) || v < 0) return Bad(absl::StrCat("stage timing ", i, ": ", v, " seconds"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kStepPlan:
      return "StepPlan";
    case MessageType::kActivations:
      return "Activations";
    case MessageType::kStepResult:
      return "StepResult";
  }
  return "unknown";
}

absl::Status ValidateHeader(const void* header, size_t header_length, size_t data_length) {
  if (header_length != sizeof(WireHeader)) {
    return Bad(absl::StrCat("header is ", header_length, " bytes, expected ", sizeof(WireHeader)));
  }
  WireHeader h;
  std::memcpy(&h, header, sizeof(h));
  if (h.magic != kWireMagic) return Bad(absl::StrCat("bad magic 0x", absl::Hex(h.magic)));
  if (h.version != kWireVersion) {
    return Bad(absl::StrCat("wire version ", h.version, ", this build speaks ", kWireVersion));
  }
  if (h.type < 1 || h.type > 3) return Bad(absl::StrCat("unknown message type ", h.type));
  if (h.plan_bytes > kMaxPlanBytes) return Bad(absl::StrCat("plan of ", h.plan_bytes, " bytes is over the limit"));
  if (h.payload_bytes > kMaxPayloadBytes) {
    return Bad(absl::StrCat("payload of ", h.payload_bytes, " bytes is over the limit"));
  }
  if (static_cast<uint64_t>(h.plan_bytes) + h.payload_bytes != data_length) {
    return Bad(absl::StrCat("header announces ", h.plan_bytes, " + ", h.payload_bytes, " bytes but ",
                            data_length, " arrived"));
  }
  const auto type = static_cast<MessageType>(h.type);
  if ((type == MessageType::kStepPlan || type == MessageType::kActivations) && h.plan_bytes == 0) {
    return Bad(absl::StrCat(MessageTypeName(type), " without a plan"));
  }
  if (type == MessageType::kStepPlan && h.payload_bytes != 0) return Bad("StepPlan with a payload");
  if (type == MessageType::kStepResult && h.plan_bytes != 0) return Bad("StepResult with a plan");
  return absl::OkStatus();
}

int64_t StepPlan::NumRows() const {
  int64_t n = 0;
  for (const PlanSequence& s : sequences) n += s.num_tokens;
  return n;
}

std::string EncodePlan(const StepPlan& plan) {
  Writer w;
  w.Put<uint64_t>(plan.step_id);
  w.Put<uint8_t>((plan.return_logits ? 1 : 0) | (plan.shift_boundaries ? 2 : 0));
  w.Put<uint32_t>(static_cast<uint32_t>(plan.sequences.size()));
  for (const PlanSequence& s : plan.sequences) {
    w.Put<uint64_t>(s.seq_id);
    w.Put<int32_t>(s.num_tokens);
    w.Put<int32_t>(s.cached_tokens);
    w.Put<int64_t>(s.position_offset);
    w.PutVector(s.block_table);
    w.Put<uint8_t>(static_cast<uint8_t>((s.sample ? 1 : 0) | (s.prompt_logprobs ? 2 : 0)));
    w.Put<float>(s.sampling.temperature);
    w.Put<int32_t>(s.sampling.top_k);
    w.Put<float>(s.sampling.top_p);
    w.Put<uint64_t>(s.sampling.seed);
    w.Put<uint64_t>(s.sampling.step);
    w.Put<int32_t>(s.logprobs);
    w.Put<int32_t>(s.next_token_id);
  }
  w.PutVector(plan.token_ids);
  PutTimings(w, plan.timings);
  std::string out = w.Take();
  out.resize((out.size() + 7) / 8 * 8, '\0');  // keeps the payload after it 8-byte aligned
  return out;
}

absl::StatusOr<StepPlan> DecodePlan(const uint8_t* data, size_t size) {
  Reader r(data, size);
  StepPlan plan;
  uint8_t flags = 0;
  uint32_t n = 0;
  if (!r.Get(&plan.step_id) || !r.Get(&flags) || !r.Get(&n)) return Bad("plan truncated in its header");
  if (flags > 3) return Bad(absl::StrCat("unknown plan flags ", static_cast<int>(flags)));
  plan.return_logits = (flags & 1) != 0;
  plan.shift_boundaries = (flags & 2) != 0;
  if (n == 0 || n > kMaxSequencesPerStep) {
    return Bad(absl::StrCat("plan has ", n, " sequences, expected 1 to ", kMaxSequencesPerStep));
  }
  plan.sequences.resize(n);
  int64_t rows = 0;
  for (uint32_t i = 0; i < n; ++i) {
    PlanSequence& s = plan.sequences[i];
    uint8_t f = 0;
    if (!r.Get(&s.seq_id) || !r.Get(&s.num_tokens) || !r.Get(&s.cached_tokens) || !r.Get(&s.position_offset) ||
        !r.GetVector(&s.block_table, kMaxBlockTable) || !r.Get(&f) || !r.Get(&s.sampling.temperature) ||
        !r.Get(&s.sampling.top_k) || !r.Get(&s.sampling.top_p) || !r.Get(&s.sampling.seed) ||
        !r.Get(&s.sampling.step) || !r.Get(&s.logprobs) || !r.Get(&s.next_token_id)) {
      return Bad(absl::StrCat("plan truncated in sequence ", i));
    }
    if (f > 3) return Bad(absl::StrCat("sequence ", i, ": unknown flags ", static_cast<int>(f)));
    s.sample = (f & 1) != 0;
    s.prompt_logprobs = (f & 2) != 0;
    if (s.num_tokens < 1 || s.num_tokens > kMaxRowsPerStep) {
      return Bad(absl::StrCat("sequence ", i, ": num_tokens ", s.num_tokens, " is outside [1, ", kMaxRowsPerStep, "]"));
    }
    if (s.cached_tokens < 0) return Bad(absl::StrCat("sequence ", i, ": cached_tokens ", s.cached_tokens, " < 0"));
    if (s.position_offset < 0) return Bad(absl::StrCat("sequence ", i, ": position_offset < 0"));
    const Sampling& p = s.sampling;
    if (!(p.temperature >= 0.0f && p.temperature <= 2.0f)) {
      return Bad(absl::StrCat("sequence ", i, ": temperature ", p.temperature, " is outside [0, 2]"));
    }
    if (p.top_k < 0) return Bad(absl::StrCat("sequence ", i, ": top_k ", p.top_k, " < 0"));
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
      return Bad(absl::StrCat("sequence ", i, ": top_p ", p.top_p, " is outside (0, 1]"));
    }
    if (s.logprobs < -1 || s.logprobs > kMaxTopLogprobs) {
      return Bad(absl::StrCat("sequence ", i, ": logprobs ", s.logprobs, " is outside [-1, ", kMaxTopLogprobs, "]"));
    }
    rows += s.num_tokens;
    if (rows > kMaxRowsPerStep) return Bad(absl::StrCat("plan has over ", kMaxRowsPerStep, " rows"));
  }
  if (!r.GetVector(&plan.token_ids, kMaxRowsPerStep)) return Bad("plan truncated in token_ids");
  if (static_cast<int64_t>(plan.token_ids.size()) != rows) {
    return Bad(absl::StrCat("plan has ", rows, " rows but ", plan.token_ids.size(), " token ids"));
  }
  if (absl::Status s = GetTimings(r, &plan.timings); !s.ok()) return s;
  if (r.left() >= 8 || (size % 8) != 0) {
    return Bad(absl::StrCat(r.left(), " trailing bytes after the plan (at most 7 padding bytes to 8-byte size)"));
  }
  for (size_t i = size - r.left(); i < size; ++i) {
    if (data[i] != 0) return Bad("nonzero padding after the plan");
  }
  return plan;
}

void StepResult::SetStatus(const absl::Status& status) {
  code = static_cast<int32_t>(status.code());
  error = status.ok() ? "" : std::string(status.message());
  if (!status.ok() && error.empty()) error = absl::StatusCodeToString(status.code());
  if (error.size() > static_cast<size_t>(kMaxErrorBytes)) error.resize(kMaxErrorBytes);
}

absl::Status StepResult::status() const {
  return ok() ? absl::OkStatus() : absl::Status(static_cast<absl::StatusCode>(code), error);
}

std::string EncodeResult(const StepResult& result) {
  Writer w;
  w.Put<uint64_t>(result.step_id);
  w.Put<int32_t>(result.code);
  w.PutString(result.error);
  PutTimings(w, result.timings);
  w.Put<uint32_t>(static_cast<uint32_t>(result.sequences.size()));
  for (const SequenceResult& s : result.sequences) {
    w.Put<uint64_t>(s.seq_id);
    w.Put<int32_t>(s.token);
    w.Put<float>(s.logprob);
    w.Put<uint32_t>(static_cast<uint32_t>(s.top.size()));
    for (const TokenLogprob& t : s.top) {
      w.Put<int32_t>(t.token);
      w.Put<float>(t.logprob);
    }
    w.PutVector(s.prompt_logprobs);
    w.PutVector(s.logits);
  }
  return w.Take();
}

absl::StatusOr<StepResult> DecodeResult(const uint8_t* data, size_t size) {
  Reader r(data, size);
  StepResult result;
  uint32_t n = 0;
  if (!r.Get(&result.step_id) || !r.Get(&result.code) || !r.GetString(&result.error, kMaxErrorBytes)) {
    return Bad("result truncated in its header");
  }
  if (result.code < 0 || result.code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return Bad(absl::StrCat("result status code ", result.code, " is not a gRPC code"));
  }
  if ((result.code == 0) != result.error.empty()) {
    return Bad(absl::StrCat("result with status code ", result.code, " and ", result.error.size(),
                            " bytes of error message (a failure needs both, success neither)"));
  }
  if (absl::Status s = GetTimings(r, &result.timings); !s.ok()) return s;
  if (!r.Get(&n)) return Bad("result truncated in its header");
  if (n > kMaxSequencesPerStep) return Bad(absl::StrCat("result has ", n, " sequences"));
  result.sequences.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    SequenceResult& s = result.sequences[i];
    uint32_t top = 0;
    if (!r.Get(&s.seq_id) || !r.Get(&s.token) || !r.Get(&s.logprob) || !r.Get(&top) ||
        top > static_cast<uint32_t>(kMaxTopLogprobs)) {
      return Bad(absl::StrCat("result truncated or invalid in sequence ", i));
    }
    s.top.resize(top);
    for (TokenLogprob& t : s.top) {
      if (!r.Get(&t.token) || !r.Get(&t.logprob)) return Bad(absl::StrCat("result truncated in sequence ", i));
    }
    if (!r.GetVector(&s.prompt_logprobs, kMaxRowsPerStep) || !r.GetVector(&s.logits, 1u << 24)) {
      return Bad(absl::StrCat("result truncated in sequence ", i));
    }
  }
  if (r.left() != 0) return Bad(absl::StrCat(r.left(), " trailing bytes after the result"));
  return result;
}

}  // namespace strata::transport
