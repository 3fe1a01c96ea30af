#!/usr/bin/env python3
"""Static checks of the operator-facing files against the code, so they
cannot drift apart silently:
- monitoring/ (monitoring_checks.py): the alert and recording rules are
  well-formed, every strata_* metric that they, the Grafana dashboard and
  the scrape configs name is one the router or a worker exports
  (histograms with _bucket/_sum/_count), every alert and recording rule has
  a promtool unit test, and both scrape configs (one host, Kubernetes)
  validate against prometheus_config.schema.json;
- the dashboard JSON is what monitoring/grafana/make_dashboard.py writes;
- every --flag in deploy/k8s and deploy/systemd, and every key of the
  example worker config, is a flag that strata-worker / strata-router
  accepts (from their --help);
- the Kubernetes manifests (deploy/k8s/strata.yaml and the plans'
  deploy/plans/*/k8s) parse, each worker StatefulSet's replicas equal its
  --tp-size (from the command line or the per-stage config it reads), the
  per-stage configs and the plans' systemd worker configs name only
  strata-worker flags, and every pod carries the scrape annotations for the
  port its --metrics-port serves.
usage: check_configs.py ROOT STRATA_WORKER STRATA_ROUTER
"""
import json
import os
import re
import subprocess
import sys

import yaml

import monitoring_checks

root, worker_bin, router_bin = sys.argv[1:4]
errors = []


def read(path):
    with open(os.path.join(root, path), encoding="utf-8") as f:
        return f.read()


# Metric names the code exports.
exported = set()
kinds = {}
for src in ["worker/worker_metrics.cc", "router/router_metrics.cc"]:
    text = read(src)
    for m in re.finditer(r'(Histogram|Gauge|Counter|hist|gauge|counter)\w*\(\)?\s*(?:\.Name\()?"(strata_[a-z_]+)"', text):
        exported.add(m.group(2))
        kinds[m.group(2)] = m.group(1).lower()
    for m in re.finditer(r'"(strata_[a-z_]+)"', text):
        exported.add(m.group(1))
if len(exported) < 20:
    errors.append(f"found only {len(exported)} exported metric names; the extraction is broken")


def check_names(where, text):
    # Words with a colon are recording rules, checked where they are recorded.
    for name in set(re.findall(r"(?<![\w:])(strata_[a-z_]+)(?![\w:])", text)):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported and base not in exported:
            errors.append(f"{where}: metric {name} is not exported by the router or the workers")


alerts = monitoring_checks.check_alerts(root, errors, check_names)
records = monitoring_checks.check_recording_rules(root, errors, check_names)
monitoring_checks.check_promtool_tests(root, alerts, records, errors)
monitoring_checks.check_scrape_configs(root, errors)

dash_text = read("monitoring/grafana/strata-dashboard.json")
dash = json.loads(dash_text)
recorded = set(records)
for p in dash["panels"]:
    if p["type"] != "row" and not p.get("targets"):
        errors.append(f"dashboard panel {p['title']!r} has no query")
    for t in p.get("targets", []):
        check_names(f"dashboard panel {p['title']!r}", t["expr"])
        for rule in set(re.findall(r"[a-z_]+:strata_[a-z_]+:[a-z0-9_]+", t["expr"])) - recorded:
            errors.append(f"dashboard panel {p['title']!r}: {rule} is not a recording rule")
generated = subprocess.run([sys.executable, os.path.join(root, "monitoring/grafana/make_dashboard.py")],
                           capture_output=True, text=True, check=True).stdout
if json.loads(generated) != dash:
    errors.append("monitoring/grafana/strata-dashboard.json differs from make_dashboard.py's output: regenerate it")

# Flags the binaries accept.
def flags_of(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    found = set(re.findall(r"--([a-z][a-z0-9-]*)", out))
    if len(found) < 5:
        errors.append(f"{binary} --help lists only {found}")
    return found

worker_flags, router_flags = flags_of(worker_bin), flags_of(router_bin)


def check_command(where, command):
    # The binary must be a word of its own (not "strata-router:50051", an
    # argument of the worker's --router).
    for binary, accepted in (("strata-worker", worker_flags), ("strata-router", router_flags)):
        for m in re.finditer(r"(?:^|\s|/)" + binary + r"(\s.*?)(?:$|&&|;)", command, re.S):
            for flag in re.findall(r"(?:^|\s)--([a-z][a-z0-9-]*)", m.group(1)):
                if flag not in accepted:
                    errors.append(f"{where}: {binary} has no flag --{flag}")


def worker_config_keys(where, config):
    for key in config:
        if key not in worker_flags:
            errors.append(f"{where}: {key} is not a strata-worker flag")


def pod_templates(d):
    if d["kind"] in ("Deployment", "StatefulSet"):
        return [d["spec"]["template"]]
    if d["kind"] == "LeaderWorkerSet":
        lwt = d["spec"]["leaderWorkerTemplate"]
        return [lwt[t] for t in ("leaderTemplate", "workerTemplate") if t in lwt]
    return []


# The hand-written manifest and those of the committed plans (deploy/plans,
# written by `strata plan --out`; their workers read per-stage configs from
# the strata-plan ConfigMap mounted at /etc/strata/plan).
k8s_files = ["deploy/k8s/strata.yaml"] + sorted(
    os.path.relpath(os.path.join(base, n), root)
    for base, _, names in os.walk(os.path.join(root, "deploy/plans")) for n in names if n.endswith(".yaml"))
docs = []
for path in k8s_files:
    file_docs = [d for d in yaml.safe_load_all(read(path)) if d]
    docs += file_docs
    stage_configs = {}
    for d in file_docs:
        if d["kind"] == "ConfigMap":
            for key, text in d.get("data", {}).items():
                stage_configs[key] = json.loads(text)
                worker_config_keys(f"{path} ConfigMap {d['metadata']['name']} {key}", stage_configs[key])

    def effective(cmd):
        """The container's flags: its --config file's, then the command line's."""
        flags = {}
        m = re.search(r"--config\s+\"?/etc/strata/plan/([\w.$-]+)", cmd)
        if m:
            name = m.group(1)
            if "$" in name:  # one config per stage, picked at run time: all agree on these keys
                configs = [c for k, c in stage_configs.items() if k.startswith("stage-")]
                flags = {k: v for k, v in configs[0].items() if all(c.get(k) == v for c in configs)} if configs else {}
            elif name not in stage_configs:
                errors.append(f"{path}: --config names {name}, which the ConfigMap lacks")
            else:
                flags = dict(stage_configs[name])
        for f, v in re.findall(r"--([a-z][a-z0-9-]*)[ =]([^\s-][^\s]*)", cmd):
            flags[f] = v.strip('"')
        return flags

    kinds_seen = {d["kind"] for d in file_docs}
    if "Deployment" not in kinds_seen or "Service" not in kinds_seen or not (
            {"StatefulSet", "LeaderWorkerSet"} & kinds_seen):
        errors.append(f"{path} needs a Deployment, a Service and StatefulSets or a LeaderWorkerSet")
    for d in file_docs:
        for t in pod_templates(d):
            for c in t["spec"]["containers"]:
                cmd = " ".join(c.get("command", []) + c.get("args", []))
                check_command(f"{path} {d['metadata']['name']}", cmd)
                flags = effective(cmd)
                if d["kind"] == "StatefulSet" and str(flags.get("tp-size")) != str(d["spec"]["replicas"]):
                    errors.append(f"{path} {d['metadata']['name']}: replicas must equal --tp-size")
                c["_metrics_port"] = str(flags.get("metrics-port", ""))
monitoring_checks.check_k8s_pods(docs, errors, pod_templates)
for base, _, names in os.walk(os.path.join(root, "deploy/plans")):
    for n in names:
        if n.endswith(".json") and n.startswith("worker-"):
            worker_config_keys(os.path.relpath(os.path.join(base, n), root), json.loads(read(os.path.join(base, n))))
for unit in ("deploy/systemd/strata-router.service", "deploy/systemd/strata-worker@.service"):
    text = read(unit).replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            check_command(unit, line)
config = json.loads(read("deploy/systemd/worker-s0-r0.json"))
for key in config:
    if key not in worker_flags:
        errors.append(f"deploy/systemd/worker-s0-r0.json: {key} is not a strata-worker flag")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: {len(alerts)} alert rules, {len(records)} recorded series, {sum(p['type'] != 'row' for p in dash['panels'])} dashboard panels, {len(exported)} exported metrics, "
      f"{len(docs)} Kubernetes objects in {len(k8s_files)} files, systemd units and worker configs checked")
