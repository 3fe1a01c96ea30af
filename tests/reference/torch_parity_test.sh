#!/usr/bin/env bash
# Bazel wrapper: runs the PyTorch parity test with Debian's python3-torch.
set -euo pipefail
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "torch_parity_test: /usr/bin/python3 has no torch; run tools/setup.sh --with-torch" >&2
  exit 1
fi
exec /usr/bin/python3 "$(dirname "$0")/torch_parity_test.py" "$1"
