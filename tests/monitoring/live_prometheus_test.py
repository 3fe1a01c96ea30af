#!/usr/bin/env python3
"""The monitoring files against a live cluster and Debian's Prometheus.

Starts `strata up` (2 stages x 2 ranks, 2 replicas) on a generated tiny
model and a Prometheus server on 127.0.0.1 (a temporary data folder, a
config generated from the ready file's metrics addresses, scrape and
evaluation every second, the repo's alert and recording rules), sends load
with `strata generate`, and checks through Prometheus's HTTP API:
- every target is up, and every rank of every stage exports its series
  with pipeline, stage and tp_rank labels;
- every rule evaluates without error, and every recording rule has a value
  for every pipeline (every stage of it where it is by stage);
- every dashboard panel's expression returns data;
- killing stage 1 of replica p1 (both ranks) fires StrataPipelineDown for
  p1 (and StrataProcessDown for the two workers) after the rule's `for`
  window, not before, and StrataNoPipelineServing stays quiet; starting the
  two workers again with their argv from the ready file resolves them.
Everything it starts is stopped at the end, children included, even when a
check fails. Skips with "SKIP: why" where Prometheus is not installed.
usage: live_prometheus_test.py RUNFILES_ROOT
"""
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import yaml

PIPELINES = {"p0", "p1"}
STAGES = {"0", "1"}
FOR_S = 60  # StrataPipelineDown's `for` in monitoring/alerts.yml (checked below)


def die_with_parent():
    # PR_SET_PDEATHSIG: a child is killed when this test dies, however it dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class Processes:
    """What the test starts; stop_all stops them in reverse order."""

    def __init__(self):
        self.running = []

    def start(self, name, argv, log, env=None, stop_signal=signal.SIGTERM):
        out = open(log, "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, **(env or {})), preexec_fn=die_with_parent)
        out.close()
        self.running.append((name, p, stop_signal))
        return p

    def stop_all(self):
        while self.running:
            name, p, sig = self.running.pop()
            if p.poll() is not None:
                continue
            p.send_signal(sig)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop within 60 s: killed")
                p.kill()
                p.wait()


class Prometheus:
    """The HTTP API of the server under test."""

    def __init__(self, address):
        self.base = f"http://{address}"

    def get(self, path, **params):
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.base}{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)["result"]

    def alerts(self, name):
        return [a for a in self.get("/api/v1/alerts")["alerts"] if a["labels"].get("alertname") == name]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout_s, every_s=1.0):
    """Calls check() until it returns no problems; returns the last ones."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            problems = check()
        except (OSError, RuntimeError, ValueError) as e:
            problems = [f"{what}: {e}"]
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(every_s)


def start_cluster(procs, root, tmp):
    strata = os.path.join(root, "tools/strata")
    model = os.path.join(tmp, "model")
    subprocess.run([strata, "make-model", "--out", model, "--preset", "tiny"], check=True,
                   stdout=subprocess.DEVNULL)
    ready = os.path.join(tmp, "ready.json")
    up = procs.start("strata up", [strata, "up", "--model", model, "--bin-dir", root, "--stages", "2", "--tp", "2",
                                   "--replicas", "2", "--metrics-port", "0", "--kv-memory-mb", "16",
                                   "--heartbeat-ms", "250", "--log-dir", os.path.join(tmp, "logs"),
                                   # The killed stage stays down until this test restarts it.
                                   "--restart-workers=false",
                                   "--ready-file", ready],
                     os.path.join(tmp, "up.log"), stop_signal=signal.SIGINT)
    deadline = time.monotonic() + 120
    while not os.path.exists(ready):
        if up.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("strata up did not come up:\n" + open(os.path.join(tmp, "up.log")).read()[-4000:])
        time.sleep(0.2)
    with open(ready) as f:
        return json.load(f)


def start_prometheus(procs, root, tmp, info):
    workers = [w["metrics_address"] for w in info["workers"]]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [os.path.join(root, "monitoring", f) for f in ("alerts.yml", "recording_rules.yml")],
        "scrape_configs": [
            {"job_name": "strata-router", "static_configs": [{"targets": [info["metrics_address"]]}]},
            {"job_name": "strata-worker", "static_configs": [{"targets": workers}]},
        ],
    }
    path = os.path.join(tmp, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    subprocess.run(["promtool", "check", "config", path], check=True, stdout=subprocess.DEVNULL)
    address = f"127.0.0.1:{free_port()}"
    procs.start("prometheus", ["prometheus", f"--config.file={path}", f"--web.listen-address={address}",
                               f"--storage.tsdb.path={os.path.join(tmp, 'data')}"],
                os.path.join(tmp, "prometheus.log"))
    prom = Prometheus(address)
    problems = wait_for("ready", lambda: [] if urllib.request.urlopen(prom.base + "/-/ready", timeout=2).status == 200
                        else ["not ready"], 30, 0.2)
    if problems:
        raise RuntimeError(f"prometheus did not start: {problems}")
    return prom


class Load:
    """Clients calling `strata generate` back to back on threads of their own."""

    def __init__(self, root, address, clients):
        self.argv = [os.path.join(root, "tools/strata"), "generate", "--server", address, "--max-tokens", "40",
                     "--ignore-eos", "--json"]
        self.stop = threading.Event()
        self.done = [0] * clients
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def client(self, i):
        n = 0
        while not self.stop.is_set():
            prompt = ",".join(str(1 + (i * 7 + k) % 500) for k in range(8 + 4 * i))
            n += 1
            if i == 0 and n % 4 == 0:
                # An id outside the vocabulary now and then: INVALID_ARGUMENT,
                # so one error code's ratio is above 0.
                prompt = "1,100000"
            try:
                r = subprocess.run(self.argv + ["--prompt-ids", prompt], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=60)
                self.done[i] += r.returncode == 0
            except subprocess.TimeoutExpired:
                pass

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)


def recorded_rules(root):
    """(record name, the labels each of its series must cover) for every recording rule."""
    with open(os.path.join(root, "monitoring/recording_rules.yml")) as f:
        doc = yaml.safe_load(f)
    out = {}
    for g in doc["groups"]:
        for r in g["rules"]:
            level = r["record"].split(":")[0]
            out[r["record"]] = [l for l in level.split("_") if l in ("pipeline", "stage", "code")]
    return out


def check_targets(prom):
    problems = []
    up = prom.query('up{job=~"strata-.*"}')
    if len(up) != 9 or any(s["value"][1] != "1" for s in up):
        problems.append(f"want 9 targets up: {[(s['metric']['instance'], s['value'][1]) for s in up]}")
    ranks = {(s["metric"].get("pipeline"), s["metric"].get("stage"), s["metric"].get("tp_rank"))
             for s in prom.query("strata_worker_up == 1")}
    want = {(p, s, r) for p in PIPELINES for s in STAGES for r in ("0", "1")}
    if ranks != want:
        problems.append(f"workers serving with labels {sorted(ranks)}, want {sorted(want)}")
    return problems


def check_rules(prom, root):
    problems = []
    for g in prom.get("/api/v1/rules")["groups"]:
        for r in g["rules"]:
            if r.get("health") != "ok":
                problems.append(f"rule {r['name']}: health {r.get('health')} {r.get('lastError', '')}")
    for record, keys in recorded_rules(root).items():
        series = prom.query(f"last_over_time({record}[15s])")
        values = [float(s["value"][1]) for s in series]
        if not series or not all(math.isfinite(v) for v in values):
            problems.append(f"{record}: {series}")
            continue
        if "pipeline" in keys:
            got = {s["metric"].get("pipeline") for s in series}
            if got != PIPELINES:
                problems.append(f"{record}: values for pipelines {sorted(got)}, want {sorted(PIPELINES)}")
        if "stage" in keys:
            got = {(s["metric"].get("pipeline"), s["metric"].get("stage")) for s in series}
            if got != {(p, st) for p in PIPELINES for st in STAGES}:
                problems.append(f"{record}: values for (pipeline, stage) {sorted(got)}")
        if "code" in keys:
            by_code = {s["metric"].get("code"): float(s["value"][1]) for s in series}
            if len(by_code) != 6 or not by_code.get("INVALID_ARGUMENT", 0) > 0:
                problems.append(f"{record}: want 6 codes, INVALID_ARGUMENT above 0: {by_code}")
    return problems


def check_dashboard(prom, root):
    with open(os.path.join(root, "monitoring/grafana/strata-dashboard.json")) as f:
        dash = json.load(f)
    problems = []
    for p in dash["panels"]:
        for t in p.get("targets", []):  # rows have none
            if not prom.query(t["expr"]):
                problems.append(f"panel {p['title']!r}: {t['expr']} returns no data")
    return problems


def firing(prom, name, **labels):
    return [a for a in prom.alerts(name) if a["state"] == "firing" and
            all(a["labels"].get(k) == v for k, v in labels.items())]


def kill_and_restart_stage(procs, prom, info, tmp):
    """Stage 1 of p1 dies: the alerts fire after their window; back again, they resolve."""
    victims = [w for w in info["workers"] if w["pipeline"] == "p1" and w["stage"] == 1]
    assert len(victims) == 2, victims
    killed = time.monotonic()
    for w in victims:
        os.kill(w["pid"], signal.SIGKILL)
    dead = {w["metrics_address"] for w in victims}
    seen = {}

    def fired():
        now = time.monotonic() - killed
        if firing(prom, "StrataNoPipelineServing") or firing(prom, "StrataPipelineDown", pipeline="p0"):
            seen.setdefault("wrong", f"{now:.1f} s: an alert for the replica that still serves")
        if firing(prom, "StrataPipelineDown", pipeline="p1"):
            seen.setdefault("pipeline", now)
        if {a["labels"]["instance"] for a in firing(prom, "StrataProcessDown")} == dead:
            seen.setdefault("process", now)
        return [] if {"pipeline", "process"} <= set(seen) else ["not firing yet"]

    problems = wait_for("alerts", fired, FOR_S + 25, 0.5)
    print(f"after the kill: StrataPipelineDown fired at {seen.get('pipeline')} s, StrataProcessDown at "
          f"{seen.get('process')} s (for: {FOR_S} s)")
    if problems or "wrong" in seen:
        return [f"alerts after killing stage 1 of p1: {seen}"] + problems
    if seen["pipeline"] < FOR_S - 2:
        return [f"StrataPipelineDown fired {seen['pipeline']:.1f} s after the kill, inside its {FOR_S} s window"]
    restarted = time.monotonic()
    for w in victims:
        procs.start(w["name"], w["argv"], os.path.join(tmp, f"restart_{w['tp_rank']}.log"),
                    env={"UCX_TLS": info["ucx_tls"]})

    def resolved():
        left = [a["labels"] for n in ("StrataPipelineDown", "StrataProcessDown") for a in prom.alerts(n)]
        up = prom.query('strata_pipeline_up{pipeline="p1"} == 1')
        return [] if not left and up else [f"still active: {left}; p1 up: {bool(up)}"]

    problems = wait_for("resolution", resolved, 60, 0.5)
    print(f"after the restart: resolved in {time.monotonic() - restarted:.1f} s")
    return problems


def check_alert_window(root):
    with open(os.path.join(root, "monitoring/alerts.yml")) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    down = next(r for r in rules if r.get("alert") == "StrataPipelineDown")
    return [] if down.get("for") == f"{FOR_S // 60}m" else [f"StrataPipelineDown's for is {down.get('for')}"]


def run(root, tmp, procs):
    problems = check_alert_window(root)
    start = time.monotonic()
    info = start_cluster(procs, root, tmp)
    prom = start_prometheus(procs, root, tmp, info)
    print(f"cluster and prometheus up in {time.monotonic() - start:.1f} s")
    load = Load(root, info["address"], clients=4)
    try:
        for what, check in (("targets", lambda: check_targets(prom)), ("rules", lambda: check_rules(prom, root)),
                            ("dashboard", lambda: check_dashboard(prom, root))):
            found = wait_for(what, check, 45)
            print(f"{what}: {'ok' if not found else 'FAILED'} at {time.monotonic() - start:.1f} s")
            problems += found
    finally:
        load.close()
    print(f"load: {sum(load.done)} requests answered")
    if sum(load.done) == 0:
        problems.append("no request of the load was answered")
    light = Load(root, info["address"], clients=1)  # the surviving replica keeps serving
    try:
        problems += kill_and_restart_stage(procs, prom, info, tmp)
    finally:
        light.close()
    print(f"total {time.monotonic() - start:.1f} s")
    return problems


def main():
    root = sys.argv[1]
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        print("SKIP: Prometheus is not installed (tools/setup.sh installs Debian's prometheus)")
        return 0
    tmp = os.environ.get("TEST_TMPDIR") or os.path.abspath("live_prometheus_tmp")
    os.makedirs(tmp, exist_ok=True)
    # Bazel ends a test with SIGTERM at its timeout: stop everything then too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    procs = Processes()
    try:
        problems = run(root, tmp, procs)
    finally:
        procs.stop_all()
    for p in problems:
        print("FAIL:", p)
    if problems:
        for log in ("up.log", "prometheus.log"):
            print(f"--- {log} (tail)\n" + open(os.path.join(tmp, log), errors="replace").read()[-3000:])
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
