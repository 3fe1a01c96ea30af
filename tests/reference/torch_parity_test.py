"""strata's engine against an independent PyTorch implementation of
Hugging Face's Llama math, on generated checkpoints of several shapes.

For each case: make a checkpoint with `strata make-model`, generate 32
greedy tokens with `strata run`, then run PyTorch on the same weights over
the same sequence and require, at every step, logits within 1e-4 relative
(|a - b| <= 1e-4 * max(1, |b|)) and strata's token to be PyTorch's argmax.
Where PyTorch's top two logits are within 1e-4 of each other (a float
rounding tie), either token is accepted and the test says so.

Each case runs on two backends: the float32 reference, and the fast CPU
backend with float32 activations and KV cache (the widest f32 ISA present:
avx512, else avx2, else portable), which differs from the reference only in
summation order. The bf16-activation path (AVX-512 BF16) is checked against
the reference engine in tests/cpu.

usage: torch_parity_test.py STRATA_BINARY [WORKDIR]
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_llama  # noqa: E402

STEPS = 32
REL_TOL = 1e-4
TIE = 1e-4

# name, make-model flags, run flags
CASES = [
    ("gqa1_hd32_f32", ["--hidden", "128", "--layers", "3", "--heads", "4", "--kv-heads", "4",
                       "--head-dim", "32", "--ffn", "256", "--vocab", "256", "--dtype", "f32"], []),
    ("gqa4_tiny_bf16_sharded", ["--preset", "tiny", "--shards", "3", "--seed", "5"],
     ["--prefill-chunk", "4", "--block-size", "8"]),
    ("gqa8_hd128_tied", ["--hidden", "256", "--layers", "2", "--heads", "8", "--kv-heads", "1",
                         "--head-dim", "128", "--ffn", "512", "--vocab", "300", "--tie-embeddings",
                         "--seed", "9"], []),
    ("gqa4_at_position_9000", ["--preset", "tiny", "--seed", "11"], ["--position-offset", "9000"]),
    ("gqa8_hd128_near_128k", ["--hidden", "256", "--layers", "2", "--heads", "8", "--kv-heads", "1",
                              "--head-dim", "128", "--ffn", "384", "--vocab", "300", "--seed", "13"],
     ["--position-offset", "131000"]),
]


def f32_isa():
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "portable"


BACKENDS = [
    ("reference", ["--backend", "reference"]),
    ("cpu-f32", ["--backend", "cpu", "--isa", f32_isa(), "--kv-dtype", "f32"]),
]


def run_case(strata, workdir, name, make_flags, run_flags, backend_name, backend_flags):
    model_dir = os.path.join(workdir, name)
    if not os.path.exists(model_dir):
        subprocess.run([strata, "make-model", "--out", model_dir] + make_flags, check=True,
                       stderr=subprocess.DEVNULL)
    run_flags = run_flags + backend_flags
    name = "%s [%s]" % (name, backend_name)
    prompt = [(i * 29 + 7) % 200 + 3 for i in range(11)]
    logits_path = os.path.join(workdir, name.replace(" ", "_") + ".logits")
    out = subprocess.run(
        [strata, "run", "--model", model_dir, "--prompt-ids", ",".join(map(str, prompt)),
         "--max-tokens", str(STEPS), "--ignore-eos", "--json", "--logits-out", logits_path,
         "--threads", "2"] + run_flags,
        check=True, capture_output=True, text=True)
    import json
    tokens = json.loads(out.stdout)["tokens"]
    assert len(tokens) == STEPS, (name, tokens)

    config, weights = hf_llama.load_checkpoint(model_dir)
    vocab = config["vocab_size"]
    ours = np.fromfile(logits_path, dtype=np.float32).reshape(STEPS, vocab)
    offset = 0
    if "--position-offset" in run_flags:
        offset = int(run_flags[run_flags.index("--position-offset") + 1])
    seq = prompt + tokens[:-1]
    ref = hf_llama.forward(config, weights, seq, offset)[len(prompt) - 1:].numpy()
    assert ref.shape == ours.shape, (ref.shape, ours.shape)

    failures = []
    ties = 0
    err = np.abs(ours - ref)
    bound = REL_TOL * np.maximum(1.0, np.abs(ref))
    worst = float((err / bound).max())
    if worst > 1.0:
        step, idx = np.unravel_index(np.argmax(err / bound), err.shape)
        failures.append("logits differ at step %d id %d: strata %.7g torch %.7g" %
                        (step, idx, ours[step, idx], ref[step, idx]))
    for step in range(STEPS):
        want = int(np.argmax(ref[step]))
        if tokens[step] != want:
            top2 = np.sort(ref[step])[-2:]
            if top2[1] - ref[step][tokens[step]] <= TIE:
                ties += 1
            else:
                failures.append("step %d: strata chose %d, torch argmax %d" % (step, tokens[step], want))
    spread = float(ref.std(axis=1).mean())
    print("%-38s %2d steps  max err/bound %.3f  logit std %.2f  distinct tokens %2d  ties %d  %s" %
          (name, STEPS, worst, spread, len(set(tokens)), ties, "FAIL" if failures else "ok"))
    for f in failures:
        print("    " + f)
    return not failures


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    strata = os.path.abspath(sys.argv[1])
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR")) as workdir:
        results = [run_case(strata, workdir, *case, *backend) for case in CASES for backend in BACKENDS]
    passed = sum(results)
    print("torch parity: %d passed, %d failed" % (passed, len(results) - passed))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
