#!/usr/bin/env python3
"""Writes strata-dashboard.json, the Grafana dashboard for strata (router
and workers). Edit the panel list here and run it again:
  python3 monitoring/grafana/make_dashboard.py > monitoring/grafana/strata-dashboard.json
"""
import json

PANELS = [
    # (title, unit, [(expr, legend)])
    ("Requests by outcome", "reqps", [('sum by (outcome) (rate(strata_requests_total[1m]))', "{{outcome}}")]),
    ("Pipelines up", "none", [('strata_pipeline_up', "{{pipeline}}")]),
    ("Time to first token", "s", [
        ('histogram_quantile(0.5, sum by (le) (rate(strata_time_to_first_token_seconds_bucket[5m])))', "p50"),
        ('histogram_quantile(0.95, sum by (le) (rate(strata_time_to_first_token_seconds_bucket[5m])))', "p95")]),
    ("Inter-token latency", "s", [
        ('histogram_quantile(0.5, sum by (le) (rate(strata_inter_token_latency_seconds_bucket[5m])))', "p50"),
        ('histogram_quantile(0.95, sum by (le) (rate(strata_inter_token_latency_seconds_bucket[5m])))', "p95")]),
    ("Request latency and queue time (p95)", "s", [
        ('histogram_quantile(0.95, sum by (le) (rate(strata_request_latency_seconds_bucket[5m])))', "request"),
        ('histogram_quantile(0.95, sum by (le) (rate(strata_queue_time_seconds_bucket[5m])))', "queue")]),
    ("Tokens per second", "none", [
        ('sum(rate(strata_generation_tokens_total[1m]))', "generated"),
        ('sum(rate(strata_prompt_tokens_total[1m]))', "prompt")]),
    ("Queue and running sequences", "none", [
        ('sum(strata_queue_depth)', "queued"), ('sum(strata_running_sequences)', "running")]),
    ("KV cache usage", "percentunit", [('strata_kv_cache_usage_ratio', "{{model}}")]),
    ("Preemptions per second", "none", [('sum(rate(strata_preemptions_total[1m]))', "preemptions")]),
    ("Steps per pipeline", "none", [('sum by (pipeline) (rate(strata_pipeline_steps_total[1m]))', "{{pipeline}}")]),
    ("Worker step time (p95)", "s", [
        ('histogram_quantile(0.95, sum by (le, stage, phase) (rate(strata_worker_step_seconds_bucket[5m])))',
         "stage {{stage}} {{phase}}")]),
    ("Worker steps by phase", "none", [
        ('sum by (stage, phase) (rate(strata_worker_steps_total[1m]))', "stage {{stage}} {{phase}}")]),
    ("Activation traffic", "Bps", [
        ('sum by (stage, direction) (rate(strata_worker_activation_bytes_total[1m]))', "stage {{stage}} {{direction}}")]),
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
        ('sum by (stage, tp_rank) (rate(strata_worker_messages_rejected_total[5m]))', "rejected s{{stage}} r{{tp_rank}}"),
        ('sum by (stage, tp_rank) (rate(strata_worker_steps_aborted_total[5m]))', "aborted s{{stage}} r{{tp_rank}}")]),
]


def main():
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + j), "expr": e, "legendFormat": l} for j, (e, l) in enumerate(targets)],
        })
    dash = {
        "title": "strata",
        "uid": "strata-overview",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "tags": ["strata", "llm"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }
    print(json.dumps(dash, indent=2))


if __name__ == "__main__":
    main()
