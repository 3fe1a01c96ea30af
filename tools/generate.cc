#include "tools/generate.h"

#include <chrono>
#include <cstdint>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "base/grpc_status.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"
#include "tools/client_channel.h"

namespace strata::tools {
namespace {

using base::BoolFlag;
using base::IntFlag;
using base::StringFlag;

v1::GenerateRequest RequestFrom(const base::ParsedFlags& f) {
  v1::GenerateRequest req;
  req.set_request_id(f.String("request-id"));
  if (f.HasValue("prompt-ids")) {
    for (int64_t id : f.IntList("prompt-ids")) req.add_prompt_ids(static_cast<int32_t>(id));
  }
  if (f.IsSet("prompt")) {
    if (f.Bool("chat")) {
      v1::ChatMessage* m = req.add_messages();
      m->set_role("user");
      m->set_content(f.String("prompt"));
    } else {
      req.set_prompt(f.String("prompt"));
    }
  }
  if (f.IsSet("stop")) req.mutable_stop()->add_stop_strings(f.String("stop"));
  req.mutable_sampling()->set_temperature(static_cast<float>(f.Double("temperature")));
  req.mutable_sampling()->set_top_k(static_cast<int32_t>(f.Int("top-k")));
  req.mutable_sampling()->set_top_p(static_cast<float>(f.Double("top-p")));
  if (f.IsSet("seed")) req.mutable_sampling()->set_seed(static_cast<uint64_t>(f.Int("seed")));
  req.mutable_stop()->set_max_tokens(static_cast<int32_t>(f.Int("max-tokens")));
  req.mutable_stop()->set_ignore_eos(f.Bool("ignore-eos"));
  req.set_logprobs(static_cast<int32_t>(f.Int("logprobs")));
  req.set_return_logprobs(f.Int("logprobs") >= 0);
  req.set_priority(static_cast<int32_t>(f.Int("priority")));
  return req;
}

// What the stream delivered, gathered.
struct Reply {
  std::vector<int32_t> tokens;
  nlohmann::json logprobs = nlohmann::json::array();
  std::string finish = "none", request_id, text;
  v1::Usage usage;
};

// Adds one streamed message to `r`; with --stream, prints what it brought.
void Take(const v1::GenerateResponse& msg, bool json, bool stream, bool logprobs, Reply* r) {
  r->request_id = msg.request_id();
  r->text += msg.text();
  std::vector<int32_t> fresh;
  for (const auto& t : msg.tokens()) {
    fresh.push_back(t.token_id());
    r->tokens.push_back(t.token_id());
    if (logprobs) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& o : t.top()) top.push_back({{"id", o.token_id()}, {"logprob", o.logprob()}});
      r->logprobs.push_back({{"id", t.token_id()}, {"logprob", t.logprob()}, {"top", top}});
    }
  }
  if (stream && (!fresh.empty() || !msg.text().empty())) {
    if (json) {
      std::cout << nlohmann::json({{"tokens", fresh}, {"text", msg.text()}}).dump() << std::endl;
    } else if (!msg.text().empty()) {
      std::cout << msg.text() << std::flush;
    } else {
      std::cout << absl::StrJoin(fresh, " ") << std::endl;
    }
  }
  if (msg.finish_reason() != v1::GenerateResponse::FINISH_REASON_UNSPECIFIED) {
    r->finish = absl::AsciiStrToLower(v1::GenerateResponse::FinishReason_Name(msg.finish_reason()));
    r->usage = msg.usage();
  }
}

void Print(const Reply& r, const grpc::Status& s, bool json, bool stream, bool logprobs) {
  if (json) {
    nlohmann::json out = {{"request_id", r.request_id},
                          {"tokens", r.tokens},
                          {"text", r.text},
                          {"finish_reason", r.finish},
                          {"usage",
                           {{"prompt_tokens", r.usage.prompt_tokens()},
                            {"completion_tokens", r.usage.completion_tokens()}}}};
    if (logprobs) out["logprobs"] = r.logprobs;
    if (!s.ok()) out["error"] = {{"code", static_cast<int>(s.error_code())}, {"message", s.error_message()}};
    std::cout << out.dump() << std::endl;
  } else if (!stream) {
    std::cout << absl::StrJoin(r.tokens, " ") << "\n";
    if (!r.text.empty()) std::cout << "text: " << r.text << "\n";
    std::cout << "finish: " << r.finish << std::endl;
  } else if (!r.text.empty()) {
    std::cout << "\nfinish: " << r.finish << std::endl;
  }
}

}  // namespace

const base::FlagTable& GenerateFlags() {
  static const base::FlagTable* table = new base::FlagTable(
      "strata generate --server HOST:PORT (--prompt-ids 1,2,3 | --prompt TEXT) [flags]",
      "One Generate call: the token ids (and text) and the finish reason.",
      {{"request",
        {base::AddressFlag("server", "the router's gRPC address").Required(),
         base::IntListFlag("prompt-ids", std::nullopt, 0, INT32_MAX, "the prompt's token ids"),
         StringFlag("prompt", std::nullopt, "TEXT", "a text prompt (the router needs a tokenizer)"),
         BoolFlag("chat", false, "--prompt is a user turn of the Llama 3.1 chat format"),
         StringFlag("stop", std::nullopt, "STR", "stop before this string"),
         IntFlag("max-tokens", 16, 1, 1 << 20, "tokens to generate"),
         base::DoubleFlag("temperature", 0, "sampling temperature (0: greedy)"),
         IntFlag("top-k", 0, 0, 1 << 20, "sample among the k likeliest (0: all)"),
         base::DoubleFlag("top-p", 1, "sample within this probability mass"),
         IntFlag("seed", 0, 0, INT64_MAX, "the sampler's seed (unset: the router draws one)"),
         BoolFlag("ignore-eos", false, "generate --max-tokens even past EOS"),
         IntFlag("logprobs", -1, -1, 20, "log-probabilities of this many alternatives (-1: none)"),
         IntFlag("priority", 0, INT32_MIN, INT32_MAX, "higher is scheduled first"),
         StringFlag("request-id", std::nullopt, "ID", "the request's id (default: the router's)"),
         IntFlag("timeout-ms", 600000, 1, 86400000, "the call's deadline"),
         BoolFlag("json", false, "print the reply as JSON"),
         BoolFlag("stream", false, "print text or tokens as they arrive")}},
       ClientSecurityFlags()});
  return *table;
}

absl::Status Generate(const base::ParsedFlags& f) {
  if (f.IsSet("prompt") == f.IsSet("prompt-ids")) {
    return absl::InvalidArgumentError("give exactly one of --prompt and --prompt-ids");
  }
  const v1::GenerateRequest req = RequestFrom(f);
  auto channel = ClientChannel::FromFlags(f.String("server"), f);
  if (!channel.ok()) return channel.status();
  auto stub = v1::Inference::NewStub(channel->channel());
  grpc::ClientContext ctx;
  channel->Authorize(&ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(f.Int("timeout-ms")));
  auto reader = stub->Generate(&ctx, req);
  const bool json = f.Bool("json"), stream = f.Bool("stream"), logprobs = f.Int("logprobs") >= 0;
  Reply reply;
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) Take(msg, json, stream, logprobs, &reply);
  const grpc::Status s = reader->Finish();
  Print(reply, s, json, stream, logprobs);
  return base::FromGrpc(s);
}

}  // namespace strata::tools
