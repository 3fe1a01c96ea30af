#!/usr/bin/env bash
# README's first command: installs what is missing, builds strata, makes a
# small random Llama 3 model that carries the Llama 3 tokenizer, starts a
# local cluster on it (`strata up`: a router and 2 pipeline stages x 2
# tensor-parallel workers, UCX over shared memory, the OpenAI-compatible
# HTTP API), asks it for tokens through the public gRPC API
# (`strata generate`) and checks them against the single-process engine
# (`strata run`), asks it a chat question through gRPC and through the
# HTTP API (curl) and prints both replies as text, then stops the cluster.
# Usage: tools/quickstart.sh [--preset tiny|1b] [--max-tokens N] [--stages S] [--tp T]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=tiny
max_tokens=16
stages=2
tp=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) preset="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --stages) stages="$2"; shift 2 ;;
    --tp) tp="$2"; shift 2 ;;
    *) echo "quickstart: unknown argument $1" >&2; exit 2 ;;
  esac
done

tools/setup.sh
tools/tokenizer/make_data.sh  # Llama 3's tokenizer files, from npm
bazel build //tools:strata //router:strata-router //worker:strata-worker
strata=bazel-bin/tools/strata
# The tiny model in f32 with an f32 KV cache: then the cluster (whose TP
# all-reduce sums in another order) must give exactly the single-process
# tokens. The 1b preset stays bf16 (3 GB), where a rounding tie may differ.
dtype=f32
[[ "$preset" == tiny ]] || dtype=bf16
model="out/${preset}-${dtype}-llama3-model"
if [[ ! -f "$model/config.json" ]]; then
  "$strata" make-model --out "$model" --preset "$preset" --dtype "$dtype" --seed 1 \
    --vocab 128256 --tokenizer third_party/llama3_tokenizer/data
fi
ready=$(mktemp -u /tmp/strata-quickstart-XXXXXX.ready)
"$strata" up --model "$model" --stages "$stages" --tp "$tp" --kv-memory-mb 64 --kv-dtype "$dtype" \
  --http-port 0 --ready-file "$ready" &
up=$!
trap 'kill -INT $up 2>/dev/null; wait $up 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  [[ -f "$ready" ]] && break
  kill -0 $up 2>/dev/null || { echo "quickstart: strata up failed" >&2; exit 1; }
  sleep 0.2
done
[[ -f "$ready" ]] || { echo "quickstart: the cluster did not come up" >&2; exit 1; }
field() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$ready" "$1"; }
address=$(field address)
http=$(field http_address)
echo "prompt ids: 1 15 27 99 3"
served=$("$strata" generate --server "$address" --prompt-ids 1,15,27,99,3 --max-tokens "$max_tokens" --json)
echo "cluster ($stages stage(s) x $tp rank(s)): $served"
local_run=$("$strata" run --model "$model" --prompt-ids 1,15,27,99,3 --max-tokens "$max_tokens" \
  --kv-dtype "$dtype" --json 2>/dev/null | head -1)
echo "single process:            $local_run"
tokens() { sed -E 's/.*"tokens":\[([^]]*)\].*/\1/' <<<"$1"; }
if [[ "$(tokens "$served")" == "$(tokens "$local_run")" ]]; then
  echo "quickstart: the cluster's tokens equal the single-process engine's"
elif [[ "$dtype" == f32 ]]; then
  echo "quickstart: the cluster and the single-process engine disagree" >&2
  exit 1
else
  echo "quickstart: bf16 weights: the cluster's tensor-parallel sums round differently from one process here"
fi

# A chat question through both APIs. The weights are random, so the reply
# is random text too; what matters is that both APIs give the same one.
question="What is the capital of France?"
echo
echo "chat: $question"
grpc_reply=$("$strata" generate --server "$address" --prompt "$question" --chat --max-tokens 12 --json)
echo "gRPC reply:     $(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print(repr(r["text"]), r["tokens"])' "$grpc_reply")"
http_reply=$(curl -s "http://$http/v1/chat/completions" -H 'Content-Type: application/json' \
  -d "{\"messages\": [{\"role\": \"user\", \"content\": \"$question\"}], \"max_tokens\": 12, \"temperature\": 0}")
echo "HTTP API reply: $(python3 -c 'import json, sys; print(repr(json.loads(sys.argv[1])["choices"][0]["message"]["content"]))' "$http_reply")"
echo "(random weights: the text is random; the two replies must match)"
same=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["text"] == json.loads(sys.argv[2])["choices"][0]["message"]["content"])' "$grpc_reply" "$http_reply")
if [[ "$same" != True ]]; then
  echo "quickstart: the gRPC and HTTP replies differ" >&2
  exit 1
fi
echo "quickstart: the gRPC and HTTP API replies are the same text"
