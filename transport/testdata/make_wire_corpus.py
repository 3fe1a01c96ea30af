#!/usr/bin/env python3
"""Writes the wire fuzzer's seed corpus (transport/testdata/wire_corpus) from
the layout documented in transport/wire.h, independently of the C++ encoder:
//transport:wire_test decodes each seed, so the format on the page is the
format in the code. Each file is one selector byte (even: a full-size
header), the 80-byte WireHeader, then the data. Run it after a wire change:
    python3 transport/testdata/make_wire_corpus.py
"""
import os
import struct

VERSION = 3
MAGIC = 0x41525453
PLAN, ACTIVATIONS, RESULT = 1, 2, 3


def header(kind, step, plan_bytes, payload_bytes, src_stage=-1, src_rank=-1):
    return struct.pack("<IHHQQIhhQQ32s", MAGIC, VERSION, kind, step, 0, plan_bytes, src_stage, src_rank,
                       payload_bytes, 0, bytes(32))


def timings(entries):
    out = struct.pack("<I", len(entries))
    for stage, queue, compute, allreduce, send in entries:
        out += struct.pack("<iffff", stage, queue, compute, allreduce, send)
    return out


def plan(step, stage_timings):
    out = struct.pack("<QBI", step, 0, 1)
    # one sequence: id 9, 2 new tokens, none cached, offset 0, block table [3]
    out += struct.pack("<QiiqI", 9, 2, 0, 0, 1) + struct.pack("<i", 3)
    out += struct.pack("<B", 1)                       # sample
    out += struct.pack("<fifQQ", 0.5, 5, 0.9, 1, 0)   # temperature, top_k, top_p, seed, step
    out += struct.pack("<ii", 2, -1)                  # logprobs, next_token_id
    out += struct.pack("<I", 2) + struct.pack("<ii", 7, 8)  # token_ids
    out += timings(stage_timings)
    return out + b"\0" * (-len(out) % 8)


def result(step):
    out = struct.pack("<Qi", step, 0) + struct.pack("<I", 0)  # code OK, no error text
    out += timings([(0, 0.001, 0.01, 0.002, 0.0005), (1, 0.0, 0.012, 0.002, 0.0001)])
    out += struct.pack("<I", 1)
    out += struct.pack("<Qif", 9, 52, -0.5)           # seq 9 sampled 52
    out += struct.pack("<I", 1) + struct.pack("<if", 52, -0.5)  # top 1
    out += struct.pack("<I", 0) + struct.pack("<I", 0)  # no prompt logprobs, no logits
    return out


def main():
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire_corpus")
    os.makedirs(d, exist_ok=True)
    p = plan(5, [])
    a = plan(5, [(0, 0.001, 0.01, 0.002, 0.0005)])
    hidden = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    r = result(5)
    seeds = {
        "step_plan": header(PLAN, 5, len(p), 0) + p,
        "activations": header(ACTIVATIONS, 5, len(a), len(hidden), 0, 0) + a + hidden,
        "step_result": header(RESULT, 5, 0, len(r), 1, 0) + r,
    }
    for name, body in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"\0" + body)


if __name__ == "__main__":
    main()
