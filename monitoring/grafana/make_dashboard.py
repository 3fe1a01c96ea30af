#!/usr/bin/env python3
"""Writes strata-dashboard.json, the Grafana dashboard for strata (router
and workers), one row per question an operator asks. Panels read the
recording rules (monitoring/recording_rules.yml) where one exists. Edit the
rows here and run it again:
  python3 monitoring/grafana/make_dashboard.py > monitoring/grafana/strata-dashboard.json
tests/deploy/check_configs.py checks the JSON is this script's output and
every name in it exists; tests/monitoring:live_prometheus_test checks every
expression returns data from a live cluster.
"""
import json

Q = "p{{quantile}}"
ROWS = [
    # (row title, [(panel title, unit, [(expr, legend)])])
    ("Service", [
        ("Requests by outcome", "reqps", [('sum by (outcome) (rate(strata_requests_total[1m]))', "{{outcome}}")]),
        ("Error ratio by code", "percentunit", [('model_code:strata_request_errors:ratio_rate1m', "{{code}}")]),
        ("Pipelines up", "none", [('strata_pipeline_up', "{{pipeline}}")]),
        ("Queue and running sequences", "none", [
            ('sum(strata_queue_depth)', "queued"), ('sum(strata_running_sequences)', "running")]),
    ]),
    ("Latency", [
        ("Time to first token", "s", [('model:strata_time_to_first_token_seconds:quantile_rate5m', Q)]),
        ("Inter-token latency", "s", [('model:strata_inter_token_latency_seconds:quantile_rate5m', Q)]),
        ("Request latency and queue time (p95)", "s", [
            ('histogram_quantile(0.95, sum by (le) (rate(strata_request_latency_seconds_bucket[5m])))', "request"),
            ('histogram_quantile(0.95, sum by (le) (rate(strata_queue_time_seconds_bucket[5m])))', "queue")]),
        ("Preemptions per second", "none", [('sum(rate(strata_preemptions_total[1m]))', "preemptions")]),
    ]),
    ("Throughput and capacity", [
        ("Tokens per second", "none", [
            ('sum(rate(strata_generation_tokens_total[1m]))', "generated"),
            ('sum(rate(strata_prompt_tokens_total[1m]))', "prompt")]),
        ("Output tokens per second by pipeline", "none", [
            ('pipeline:strata_pipeline_generation_tokens:rate1m', "{{pipeline}}")]),
        ("KV cache usage", "percentunit", [
            ('pipeline:strata_pipeline_kv_usage:ratio', "{{pipeline}}"), ('strata_kv_cache_usage_ratio', "all")]),
        ("KV capacity and use (tokens)", "none", [
            ('strata_pipeline_kv_capacity_tokens', "capacity {{pipeline}}"),
            ('strata_pipeline_kv_used_tokens', "used {{pipeline}}")]),
        ("KV capacity and use (blocks)", "none", [
            ('strata_pipeline_kv_capacity_blocks', "capacity {{pipeline}}"),
            ('strata_pipeline_kv_used_blocks', "used {{pipeline}}")]),
        ("Headroom: free KV tokens", "none", [('pipeline:strata_pipeline_kv_free_tokens:sum', "{{pipeline}}")]),
        ("Headroom: sequences that still fit at the mean length", "none", [
            ('pipeline:strata_pipeline_headroom_sequences:floor', "{{pipeline}}")]),
        ("Mean sequence length (tokens held)", "none", [
            ('pipeline:strata_pipeline_sequence_tokens:mean', "{{pipeline}}")]),
    ]),
    ("Prefix cache", [
        ("Prompt tokens found in the prefix cache", "percentunit", [
            ('pipeline:strata_prefix_cache_hit:ratio_rate5m', "{{pipeline}}")]),
        ("Prefix cache blocks", "none", [('strata_prefix_cache_blocks', "{{pipeline}}")]),
        ("Prefix cache evictions per second", "none", [
            ('sum by (pipeline) (rate(strata_prefix_cache_evictions_total[5m]))', "{{pipeline}}")]),
    ]),
    ("Failover", [
        ("Requests moved to another replica, by why theirs went down", "reqps", [
            ('sum by (reason) (rate(strata_requests_migrated_total[5m]))', "{{reason}}")]),
        ("Requests that could not move (ended UNAVAILABLE)", "reqps", [
            ('sum by (cause) (rate(strata_migrations_failed_total[5m]))', "{{cause}}")]),
        ("From a replica going down to a moved request's next token", "s", [
            ('histogram_quantile(0.5, sum by (le) (rate(strata_migration_resume_seconds_bucket[5m])))', "p50"),
            ('histogram_quantile(0.95, sum by (le) (rate(strata_migration_resume_seconds_bucket[5m])))', "p95")]),
    ]),
    ("Pipeline", [
        ("Steps per pipeline", "none", [('sum by (pipeline) (rate(strata_pipeline_steps_total[1m]))', "{{pipeline}}")]),
        ("Pipeline bubble", "percentunit", [('pipeline:strata_pipeline_bubble:ratio_rate1m', "{{pipeline}}")]),
        ("Step time by stage and phase (mean)", "s", [
            ('pipeline_stage_phase:strata_stage_step_seconds:mean_rate1m', "{{pipeline}} s{{stage}} {{phase}}")]),
        ("Step time by stage and phase (p95)", "s", [
            ('pipeline_stage_phase:strata_stage_step_seconds:quantile_rate5m', "{{pipeline}} s{{stage}} {{phase}}")]),
        ("Activation bandwidth per hop (while sending)", "Bps", [
            ('pipeline_stage:strata_worker_activation_transfer_bandwidth_bytes:rate1m', "{{pipeline}} from s{{stage}}")]),
        ("Activation bytes per hop", "Bps", [
            ('pipeline_stage:strata_worker_activation_sent_bytes:rate1m', "{{pipeline}} from s{{stage}}")]),
    ]),
    ("Workers", [
        ("Worker step time (p95)", "s", [
            ('histogram_quantile(0.95, sum by (le, stage, phase) (rate(strata_worker_step_seconds_bucket[5m])))',
             "stage {{stage}} {{phase}}")]),
        ("Worker steps by phase", "none", [
            ('sum by (stage, phase) (rate(strata_worker_steps_total[1m]))', "stage {{stage}} {{phase}}")]),
        ("Activation traffic", "Bps", [
            ('sum by (stage, direction) (rate(strata_worker_activation_bytes_total[1m]))',
             "stage {{stage}} {{direction}}")]),
        ("Activation transfer (p95)", "s", [
            ('histogram_quantile(0.95, sum by (le, stage) (rate(strata_worker_activation_transfer_seconds_bucket[5m])))',
             "stage {{stage}}")]),
        ("Worker KV blocks", "none", [
            ('strata_worker_kv_blocks_used', "used s{{stage}} r{{tp_rank}}"),
            ('strata_worker_kv_blocks_total', "total s{{stage}} r{{tp_rank}}")]),
        ("Worker memory", "bytes", [
            ('strata_worker_weight_bytes_loaded', "weights s{{stage}} r{{tp_rank}}"),
            ('strata_worker_device_memory_bytes', "backend s{{stage}} r{{tp_rank}}")]),
        ("Worker errors", "none", [
            ('sum by (stage, tp_rank) (rate(strata_worker_messages_rejected_total[5m]))',
             "rejected s{{stage}} r{{tp_rank}}"),
            ('sum by (stage, tp_rank) (rate(strata_worker_steps_aborted_total[5m]))', "aborted s{{stage}} r{{tp_rank}}")]),
    ]),
]


def panels():
    out, y = [], 0
    for title, row in ROWS:
        out.append({"id": len(out) + 1, "type": "row", "title": title, "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        for i, (name, unit, targets) in enumerate(row):
            out.append({
                "id": len(out) + 1,
                "type": "timeseries",
                "title": name,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": chr(65 + j), "expr": e, "legendFormat": l} for j, (e, l) in enumerate(targets)],
            })
        y += 8 * ((len(row) + 1) // 2)
    return out


def main():
    dash = {
        "title": "strata",
        "uid": "strata-overview",
        "schemaVersion": 39,
        "version": 2,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "tags": ["strata", "llm"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels(),
    }
    # One panel a line: the file stays short and a change shows as its panel's line.
    body = json.dumps({k: v for k, v in dash.items() if k != "panels"}, indent=2)[:-2]
    lines = ",\n".join("    " + json.dumps(p) for p in dash["panels"])
    print(f'{body},\n  "panels": [\n{lines}\n  ]\n}}')


if __name__ == "__main__":
    main()
