#!/bin/bash
# Runs validate_manifests.py with Debian's python3 (PyYAML, jsonschema) and
# node against the tree and the strata binary built here.
set -euo pipefail
here="$TEST_SRCDIR/strata"
export PATH="/usr/local/bin:/usr/bin:/bin:$PATH"
command -v node >/dev/null || { echo "node is needed (tools/setup.sh installs nodejs)"; exit 1; }
exec /usr/bin/python3 "$here/tests/deploy/validate_manifests.py" "$here" "$here/tools/strata" "$TEST_TMPDIR"
