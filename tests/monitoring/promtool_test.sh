#!/bin/bash
# promtool (Debian's prometheus package) on monitoring/: the one-host
# scrape config, both rule files, and the rules' unit tests (every alert
# with input series that make it fire, every recording rule with its value
# computed by hand). Skips, saying why, where promtool is not installed.
set -euo pipefail
command -v promtool >/dev/null ||
  { echo "SKIP: promtool is not installed (tools/setup.sh installs Debian's prometheus)"; exit 0; }
cd "$TEST_SRCDIR/strata/monitoring"
promtool check config prometheus.yml
promtool check rules alerts.yml recording_rules.yml
cd tests
promtool test rules alerts_test.yml recording_rules_test.yml
