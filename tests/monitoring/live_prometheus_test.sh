#!/bin/bash
# Runs live_prometheus_test.py with Debian's python3 (PyYAML).
set -euo pipefail
here="$TEST_SRCDIR/strata"
exec /usr/bin/python3 "$here/tests/monitoring/live_prometheus_test.py" "$here"
