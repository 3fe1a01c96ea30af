"""Static checks of monitoring/ (used by check_configs.py):
- alerts.yml and recording_rules.yml are well-formed rule files, every
  metric their expressions name is exported (check_names), and every alert
  and every recording rule has a promtool unit test in monitoring/tests;
- prometheus.yml (one host) and prometheus-kubernetes.yml validate against
  prometheus_config.schema.json (Debian's promtool cannot check the
  Kubernetes one: it is built without Kubernetes service discovery), name
  the same rule files, which exist, and their relabel regexes compile;
- every pod that deploy/k8s runs carries the annotations and label the
  Kubernetes scrape config reads, with the port its --metrics-port serves.
"""
import json
import os
import re

import jsonschema
import yaml

RULE_FILES = ["alerts.yml", "recording_rules.yml"]
RECORD_NAME = re.compile(r"^[a-z_]+:strata_[a-z_]+:[a-z0-9_]+$")


def _load(root, path):
    with open(os.path.join(root, path), encoding="utf-8") as f:
        return yaml.safe_load(f)


def _rules(doc, where, errors):
    for g in doc.get("groups", []) if isinstance(doc, dict) else []:
        if not g.get("name") or not isinstance(g.get("rules"), list):
            errors.append(f"{where}: every group needs a name and rules")
            continue
        yield from g["rules"]


def check_alerts(root, errors, check_names):
    alerts = []
    for r in _rules(_load(root, "monitoring/alerts.yml"), "alerts.yml", errors):
        alerts.append(r.get("alert"))
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r:
                errors.append(f"alerts.yml: rule {r.get('alert')} lacks {key}")
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            errors.append(f"alerts.yml: rule {r.get('alert')} has no known severity")
        check_names(f"alerts.yml {r.get('alert')}", r.get("expr", ""))
    if len(alerts) < 10:
        errors.append(f"alerts.yml has {len(alerts)} rules")
    return alerts


def check_recording_rules(root, errors, check_names):
    records, seen = [], set()
    for r in _rules(_load(root, "monitoring/recording_rules.yml"), "recording_rules.yml", errors):
        name = r.get("record", "")
        if not RECORD_NAME.match(name):
            errors.append(f"recording_rules.yml: {name!r} is not level:strata_metric:operation")
        if "expr" not in r or set(r) - {"record", "expr", "labels"}:
            errors.append(f"recording_rules.yml: rule {name} needs record and expr (and only labels besides)")
        key = (name, tuple(sorted((r.get("labels") or {}).items())))
        if key in seen:
            errors.append(f"recording_rules.yml: {name} {dict(key[1])} is recorded twice")
        seen.add(key)
        records.append(name)
        check_names(f"recording_rules.yml {name}", r.get("expr", ""))
    if len(set(records)) < 10:
        errors.append(f"recording_rules.yml has only {len(set(records))} recorded names")
    return sorted(set(records))


def check_promtool_tests(root, alerts, records, errors):
    """Every alert fires in some test case and every record is evaluated."""
    tested = _load(root, "monitoring/tests/alerts_test.yml")
    if tested.get("rule_files") != ["../alerts.yml"]:
        errors.append("monitoring/tests/alerts_test.yml must load ../alerts.yml")
    fired = {t["alertname"] for case in tested.get("tests", []) for t in case.get("alert_rule_test", [])
             if t.get("exp_alerts")}
    for a in alerts:
        if a not in fired:
            errors.append(f"alert {a} has no promtool test that sees it fire (monitoring/tests/alerts_test.yml)")
    tested = _load(root, "monitoring/tests/recording_rules_test.yml")
    if tested.get("rule_files") != ["../recording_rules.yml"]:
        errors.append("monitoring/tests/recording_rules_test.yml must load ../recording_rules.yml")
    exprs = " ".join(t["expr"] for case in tested.get("tests", []) for t in case.get("promql_expr_test", [])
                     if t.get("exp_samples"))
    for r in records:
        if not re.search(r"(?<![\w:])" + re.escape(r) + r"(?![\w:])", exprs):
            errors.append(f"recording rule {r} has no promtool test (monitoring/tests/recording_rules_test.yml)")


def check_scrape_configs(root, errors):
    with open(os.path.join(root, "tests/deploy/prometheus_config.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for path, want_k8s in (("monitoring/prometheus.yml", False), ("monitoring/prometheus-kubernetes.yml", True)):
        doc = _load(root, path)
        for e in validator.iter_errors(doc):
            where = "/".join(str(p) for p in e.absolute_path)
            errors.append(f"{path}: {where or 'top level'}: {e.message}")
        if not isinstance(doc, dict):
            continue
        if doc.get("rule_files") != RULE_FILES:
            errors.append(f"{path}: rule_files must be {RULE_FILES}")
        for rf in RULE_FILES:
            if not os.path.exists(os.path.join(root, "monitoring", rf)):
                errors.append(f"{path}: rule file {rf} is missing")
        jobs = doc.get("scrape_configs") or []
        k8s = [j for j in jobs if "kubernetes_sd_configs" in j]
        if want_k8s and (not k8s or len(k8s) != len(jobs)):
            errors.append(f"{path}: every job must discover pods through kubernetes_sd_configs")
        if not want_k8s and k8s:
            errors.append(f"{path}: Kubernetes discovery belongs in prometheus-kubernetes.yml (promtool checks this file)")
        for j in jobs:
            for rc in j.get("relabel_configs", []) + j.get("metric_relabel_configs", []):
                try:
                    re.compile(rc.get("regex", "(.*)"))
                except re.error as x:
                    errors.append(f"{path}: job {j.get('job_name')}: regex {rc.get('regex')!r}: {x}")


def check_k8s_pods(docs, errors, pod_templates):
    """The pods the scrape config would find: annotated, labelled, on their metrics port.
    pod_templates(doc) lists a workload's pod templates; each container's
    _metrics_port is the --metrics-port it serves (command line or config)."""
    for d in docs:
        name = d["metadata"]["name"]
        for t in pod_templates(d):
            meta = t.get("metadata", {})
            notes = meta.get("annotations") or {}
            if notes.get("prometheus.io/scrape") != "true":
                errors.append(f"k8s {name}: pods lack the annotation prometheus.io/scrape: \"true\"")
            if (meta.get("labels") or {}).get("strata-role") not in ("router", "worker"):
                errors.append(f"k8s {name}: pods lack the strata-role label the scrape config makes the job of")
            for c in t["spec"]["containers"]:
                port = c.get("_metrics_port") or None
                if not port or notes.get("prometheus.io/port") != port:
                    errors.append(f"k8s {name}: prometheus.io/port {notes.get('prometheus.io/port')!r} is not the "
                                  f"--metrics-port the container serves ({port or 'none'})")
