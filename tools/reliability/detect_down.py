#!/usr/bin/env python3
"""How fast a local cluster notices a dead or hung stage worker: starts
`strata up` (2 stages x 1 rank, default router flags, the HTTP API on), kills
(SIGKILL) or stops (SIGSTOP) stage 1's worker, and prints the time until
GET /ready answers 503 (the router's health follows the same state within
100 ms). Figures go to docs/reliability.md.
Usage: tools/reliability/detect_down.py MODEL_DIR   (from the repository root, after bazel build)
"""
import json, os, signal, subprocess, sys, time, urllib.request

MODEL = sys.argv[1] if len(sys.argv) > 1 else "/tmp/tm"
S = "bazel-bin/tools/strata"
def ready_ok(h):
    try:
        return urllib.request.urlopen(f"http://{h}/ready", timeout=1).status == 200
    except Exception:
        return False
def run(sig, transport):
    rf = f"/tmp/detect-{sig}.ready"
    if os.path.exists(rf): os.remove(rf)
    up = subprocess.Popen([S, "up", "--model", MODEL, "--stages", "2", "--tp", "1", "--http-port", "0",
                           "--transport", transport, "--ready-file", rf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if os.path.exists(rf): break
            time.sleep(0.1)
        info = json.load(open(rf)); h = info["http_address"]
        while not ready_ok(h): time.sleep(0.05)
        victim = info["workers"][1]["pid"]
        t0 = time.time()
        os.kill(victim, sig)
        while ready_ok(h) and time.time() - t0 < 30: time.sleep(0.02)
        dt = time.time() - t0
        if sig == signal.SIGSTOP: os.kill(victim, signal.SIGCONT)
        return dt
    finally:
        up.send_signal(signal.SIGINT); up.wait(60)
for transport in ["shm", "tcp"]:
    for sig in [signal.SIGKILL, signal.SIGSTOP]:
        print(transport, sig.name, "%.2f s until /ready says 503" % run(sig, transport), flush=True)
