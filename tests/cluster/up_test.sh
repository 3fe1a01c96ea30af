#!/usr/bin/env bash
# strata up's supervision (issue 14):
# - a port it needs that another strata up holds (gRPC, HTTP, metrics) makes
#   it fail at once, naming the port, instead of serving beside the other;
#   a router started by hand on such a port cannot listen (no SO_REUSEPORT);
# - a worker killed with SIGKILL is restarted and its pipeline serves again;
#   --restart-workers=false leaves it down;
# - SIGTERM while the cluster is still coming up stops it and its children;
# - SIGKILL of strata up takes its children with it.
# - stages cut inside layers (--layers 1.5,1,1.5) serve the tokens of the
#   whole-layer split, and so do they with --movable-boundaries, whichever
#   side of the MLP beside each boundary the router runs a step on.
# Usage: up_test.sh STRATA   (Bazel passes bazel-bin's tools/strata)
set -euo pipefail
strata=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
bin=$(dirname "$(dirname "$strata")")
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/up_test.XXXXXX")
ups=()       # strata up processes, stopped with SIGINT
strays=()    # pid files of processes that must not outlive the test
cleanup() {
  for p in "${ups[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${ups[@]}"; do wait "$p" 2>/dev/null || true; done
  for f in "${strays[@]}"; do [[ -f "$f" ]] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
# Dead: gone, or a zombie that nobody reaps (the children of a killed
# strata up are re-parented, and a container's init may not reap them).
dead() { [[ ! -e /proc/$1/stat ]] || [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" == Z ]]; }
field() {  # ready file, python expression on j
  python3 -c "import json, sys; j = json.load(open(sys.argv[1])); print($2)" "$1"
}
# Starts strata up NAME FLAGS...; returns when its ready file is there.
start_up() {
  local name=$1
  shift
  "$strata" up --model "$work/model" --bin-dir "$bin" --kv-blocks 64 --kv-dtype f32 --log-dir "$work/$name.logs" \
    --ready-file "$work/$name.ready" "$@" >"$work/$name.log" 2>&1 &
  ups+=($!)
  for _ in $(seq 1 600); do
    [[ -f "$work/$name.ready" ]] && return 0
    kill -0 "${ups[-1]}" 2>/dev/null || break
    sleep 0.2
  done
  cat "$work/$name.log"
  fail "strata up $name did not come up"
}
generate() { "$strata" generate --server "$1" --prompt-ids 1,2,3 --max-tokens 4 --json; }

"$strata" make-model --out "$work/model" --preset tiny --dtype f32 --seed 1 >/dev/null

# 0. --layers that do not cover the model are refused before anything starts.
set +e
"$strata" up --model "$work/model" --bin-dir "$bin" --stages 2 --layers 1,1 --log-dir "$work/layers.logs" \
  >"$work/layers.log" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] && grep -q -- "--layers: 2 counts adding up to 2" "$work/layers.log" ||
  fail "--layers 1,1 for 4 layers: rc $rc, $(cat "$work/layers.log")"
ok "--layers 1,1 for a 4-layer model is refused: $(tail -1 "$work/layers.log")"

# 1. Ports another strata up holds.
start_up first --stages 2 --http-port 0 --metrics-port 0
ready=$work/first.ready
# The tiny model's lm_head is light: the balanced split is the even one.
[[ "$(field "$ready" "' '.join(a for w in j['workers'] for a in w['argv'] if a.startswith('--layers='))")" == \
   "--layers=0:2 --layers=2:4" ]] || fail "the workers' layers: $(cat "$ready")"
address=$(field "$ready" "j['address']")
# Stages cut inside layers (after a layer's attention) serve the same greedy
# tokens as the whole-layer split.
start_up halves --stages 3 --layers 1.5,1,1.5
[[ "$(field "$work/halves.ready" "' '.join(a for w in j['workers'] for a in w['argv'] if a.startswith('--layers='))")" == \
   "--layers=0:1.5 --layers=1.5:2.5 --layers=2.5:4" ]] || fail "the cut workers' layers: $(cat "$work/halves.ready")"
tokens() { generate "$1" | python3 -c 'import json, sys; print([json.loads(l)["tokens"] for l in sys.stdin][-1])'; }
want=$(tokens "$address")
got=$(tokens "$(field "$work/halves.ready" "j['address']")")
[[ "$got" == "$want" ]] || fail "layers 1.5,1,1.5 generate $got, 0:2,2:4 $want"
kill -INT "${ups[-1]}" && wait "${ups[-1]}" || true
unset 'ups[-1]'
ok "3 stages cut at layers 1.5 and 2.5 generate the tokens of 2 whole-layer stages: $got"
# Movable boundaries: the same tokens, with some steps run on the moved
# boundaries (the balancer alternates while it learns the stage times).
start_up movable --stages 3 --layers 1.5,1,1.5 --movable-boundaries --metrics-port 0
got=$(tokens "$(field "$work/movable.ready" "j['address']")")
[[ "$got" == "$want" ]] || fail "movable boundaries generate $got, 0:2,2:4 $want"
shifted=$(curl -s "http://$(field "$work/movable.ready" "j['metrics_address']")/metrics" |
  awk '/^strata_pipeline_shifted_steps_total\{/ {n += $2} END {print n + 0}')
[[ $shifted -ge 1 ]] || fail "no step ran with the boundaries moved (strata_pipeline_shifted_steps_total $shifted)"
kill -INT "${ups[-1]}" && wait "${ups[-1]}" || true
unset 'ups[-1]'
ok "movable boundaries generate the same tokens, $shifted step(s) with the boundaries moved: $got"
set +e
"$strata" up --model "$work/model" --bin-dir "$bin" --stages 3 --layers 1.5,2,0.5 --movable-boundaries \
  --log-dir "$work/movable-bad.logs" >"$work/movable-bad.log" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] && grep -q "would hold nothing with its boundaries moved" "$work/movable-bad.log" ||
  fail "--movable-boundaries with a half-layer stage: rc $rc, $(cat "$work/movable-bad.log")"
ok "a stage left empty by moved boundaries is refused: $(tail -1 "$work/movable-bad.log")"
for flag in "--port $(field "$ready" "j['address'].split(':')[1]")" \
            "--http-port $(field "$ready" "j['http_address'].split(':')[1]")" \
            "--metrics-port $(field "$ready" "j['metrics_address'].split(':')[1]")"; do
  port=${flag#* }
  set +e
  # shellcheck disable=SC2086  # the flag and its value are two words
  timeout 60 "$strata" up --model "$work/model" --bin-dir "$bin" --log-dir "$work/second.logs" $flag \
    >"$work/second.log" 2>&1
  rc=$?
  set -e
  [[ $rc -ne 0 && $rc -ne 124 ]] || { cat "$work/second.log"; fail "a second strata up with $flag: status $rc"; }
  grep -q "port $port" "$work/second.log" || { cat "$work/second.log"; fail "the error does not name port $port"; }
  ! grep -q serving "$work/second.log" || { cat "$work/second.log"; fail "a second strata up with $flag serves"; }
  ok "a second strata up with $flag fails at once, naming the port: $(tail -1 "$work/second.log")"
done
# A router started by hand on a port the first cluster's router holds fails
# to listen (no SO_REUSEPORT: before, gRPC and httplib both set it, so the
# second router shared the port and took half the clients).
for flag in "--port $(field "$ready" "j['address'].split(':')[1]")" \
            "--http-port $(field "$ready" "j['http_address'].split(':')[1]")" \
            "--metrics-port $(field "$ready" "j['metrics_address'].split(':')[1]")"; do
  port=${flag#* }
  set +e
  # shellcheck disable=SC2086
  timeout 30 "$bin/router/strata-router" --model-name model --fleet-port 0 $flag >"$work/router2.log" 2>&1
  rc=$?
  set -e
  [[ $rc -ne 0 && $rc -ne 124 ]] || { cat "$work/router2.log"; fail "a second router with $flag: status $rc"; }
  grep -q "listen on 127.0.0.1:$port" "$work/router2.log" ||
    { cat "$work/router2.log"; fail "the second router's error does not name 127.0.0.1:$port"; }
  ok "a second strata-router with $flag cannot listen: $(grep "listen on" "$work/router2.log" | tail -1)"
done
generate "$address" >/dev/null || fail "the first cluster stopped serving"

# 2. A killed worker is restarted and its pipeline serves again.
victim=$(field "$ready" "j['workers'][1]['pid']")
kill -9 "$victim"
for _ in $(seq 1 300); do
  now=$(field "$ready" "j['workers'][1]['pid']")
  [[ "$now" != "$victim" ]] && break
  sleep 0.1
done
[[ "$now" != "$victim" ]] || { cat "$work/first.log"; fail "the killed worker was not restarted"; }
grep -q "worker p0 stage 1 rank 0 exited with status 137.*restarting it in 0.5 s" "$work/first.log" ||
  { cat "$work/first.log"; fail "the restart is not logged"; }
served=
for _ in $(seq 1 150); do
  if out=$(generate "$address" 2>/dev/null); then served=$out; break; fi
  sleep 0.2
done
[[ -n "$served" ]] || { cat "$work/first.log"; fail "the pipeline did not serve again after the restart"; }
ok "a killed worker was restarted (pid $victim -> $now) and the pipeline serves again: $served"

# The same with --restart-workers=false: it stays down.
start_up single --restart-workers=false
victim=$(field "$work/single.ready" "j['workers'][0]['pid']")
kill -9 "$victim"
sleep 3
grep -q "exited with status 137" "$work/single.log" || { cat "$work/single.log"; fail "the exit is not logged"; }
! grep -q restart "$work/single.log" || { cat "$work/single.log"; fail "--restart-workers=false restarted"; }
[[ "$(field "$work/single.ready" "j['workers'][0]['pid']")" == "$victim" ]] || fail "the ready file changed"
ok "--restart-workers=false leaves a killed worker down"

# 3 and 4. A cluster that never comes up: the real router and a worker that
# only sleeps, so strata up waits for it (up to --timeout-s).
fake=$work/fake-bin
mkdir -p "$fake/router" "$fake/worker"
ln -s "$bin/router/strata-router" "$fake/router/strata-router"
cat >"$fake/worker/strata-worker" <<EOF
#!/usr/bin/env bash
echo \$\$ > "$work/fake-worker.\$PPID.pid"
exec sleep 600
EOF
chmod +x "$fake/worker/strata-worker"
for sig in TERM KILL; do
  "$strata" up --model "$work/model" --bin-dir "$fake" --log-dir "$work/fake-$sig.logs" --timeout-s 600 \
    --ready-file "$work/fake-$sig.ready" >"$work/fake-$sig.log" 2>&1 &
  up=$!
  echo "$up" >"$work/fake-up-$sig.pid"
  strays+=("$work/fake-up-$sig.pid" "$work/fake-worker.$up.pid")
  for _ in $(seq 1 300); do [[ -f "$work/fake-worker.$up.pid" ]] && break; sleep 0.1; done
  [[ -f "$work/fake-worker.$up.pid" ]] || { cat "$work/fake-$sig.log"; fail "the fake worker did not start"; }
  worker=$(cat "$work/fake-worker.$up.pid")
  router=$(pgrep -P "$up" -f strata-router || true)
  [[ -n "$router" ]] || fail "no router child of strata up $up"
  sleep 0.5
  kill -"$sig" "$up"
  for _ in $(seq 1 100); do dead "$up" && dead "$worker" && dead "$router" && break; sleep 0.1; done
  dead "$up" || { cat "$work/fake-$sig.log"; fail "strata up still runs 10 s after SIG$sig while coming up"; }
  dead "$worker" || fail "its worker (pid $worker) outlived strata up after SIG$sig"
  dead "$router" || fail "its router (pid $router) outlived strata up after SIG$sig"
  wait "$up" 2>/dev/null || true
  ok "SIG$sig while coming up: strata up, its router and its worker are gone"
done
