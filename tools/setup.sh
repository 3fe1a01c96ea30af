#!/usr/bin/env bash
# Installs every Debian package that strata's build and tests need.
# Safe to run repeatedly: it returns at once when everything is present.
# Usage: tools/setup.sh [--with-torch]   (torch is needed by the test suite only)
set -euo pipefail

PACKAGES=(
  # build tool and its offline rule repositories
  bazel-bootstrap bazel-rules-java bazel-platforms
  # RPC and serialization
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libre2-dev nlohmann-json3-dev
  # data plane, collectives, metrics
  libucx-dev ucx-utils libgloo-dev prometheus-cpp-dev
  # the OpenAI-compatible HTTP API
  libcpp-httplib-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev pkg-config iproute2
  # the monitoring tests: Prometheus's server and promtool (tests/monitoring)
  prometheus
)
TEST_PACKAGES=(python3-torch python3-numpy python3-yaml python3-jsonschema)

want=("${PACKAGES[@]}")
if [[ "${1:-}" == "--with-torch" ]]; then
  want+=("${TEST_PACKAGES[@]}")
fi

# Debian's prometheus package enables and starts a server on :9090 (all
# interfaces) where services may start (systemd, or an init script without a
# blocking policy-rc.d). The tests start their own on loopback, so none is
# left running: stop it and keep it from starting at boot.
stop_packaged_prometheus() {
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    if systemctl is-active --quiet prometheus 2>/dev/null || systemctl is-enabled --quiet prometheus 2>/dev/null; then
      $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
      echo "setup: stopped and disabled the prometheus service the package started (the tests start their own)"
    fi
  elif [[ -x /etc/init.d/prometheus ]] && $SUDO /etc/init.d/prometheus status >/dev/null 2>&1; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null && $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
    echo "setup: stopped the prometheus server the package started (the tests start their own)"
  fi
}

# The npm packages of the manifest and dashboard schema test
# (tests/deploy/npm: kubernetes-models, @grafana/schema, typescript), at the
# versions its committed package-lock.json pins; again only when the lock
# file changed since the last install.
install_npm_test_packages() {
  local dir
  dir="$(cd "$(dirname "$0")/../tests/deploy/npm" && pwd)"
  if [[ -f "$dir/node_modules/.package-lock.json" && "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]]; then
    return 0
  fi
  if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/tmp/strata-setup-npm.log 2>&1); then
    tail -20 /tmp/strata-setup-npm.log >&2
    echo "setup: npm ci failed in tests/deploy/npm (is the npm registry reachable?)" >&2
    exit 1
  fi
  echo "setup: installed tests/deploy/npm's packages"
}

missing=()
# Node.js and npm make the tokenizer's test data (tools/tokenizer); the base
# machine has Node.js, and Debian's packages fill in what is absent.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#want[@]} packages present"
  install_npm_test_packages
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
else
  SUDO=
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq; then
  echo "setup: apt-get update failed; is a Debian mirror reachable?" >&2
  exit 1
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/strata-setup-apt.log 2>&1; then
  tail -30 /tmp/strata-setup-apt.log >&2
  echo "setup: apt-get install failed for: ${missing[*]} (full log: /tmp/strata-setup-apt.log)" >&2
  exit 1
fi
# Only a server this run's install started: one that was there before is the user's.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  stop_packaged_prometheus
fi
install_npm_test_packages
echo "setup: done"
