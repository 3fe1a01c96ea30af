#!/bin/bash
# Runs check_configs.py with Debian's python3 (PyYAML) against the tree.
set -euo pipefail
here="$TEST_SRCDIR/strata"
exec /usr/bin/python3 "$here/tests/deploy/check_configs.py" "$here" "$here/worker/strata-worker" "$here/router/strata-router"
