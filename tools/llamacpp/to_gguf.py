#!/usr/bin/env python3
"""Writes a strata / Hugging Face Llama checkpoint as a GGUF file that
llama.cpp loads (architecture "llama"), for benchmarking strata against
llama.cpp on the same weights. Pure Python, no third-party modules.

  to_gguf.py MODEL_DIR OUT.gguf [--tokenizer DIR]

- Matrices keep their dtype (bf16 -> GGML BF16, f32 -> F32); norm vectors
  are written as F32 (llama.cpp multiplies by them in f32).
- q_proj and k_proj rows are permuted from Hugging Face's rotate_half RoPE
  layout to llama.cpp's adjacent-pair layout, as llama.cpp's own
  convert_hf_to_gguf.py does.
- The tokenizer (tokenizer.json from DIR or MODEL_DIR) goes in as
  tokenizer.ggml.* ("gpt2" BPE, pre-tokenizer "llama-bpe").
- Llama 3 RoPE frequency scaling (rope_freqs.weight) is written when the
  config has it.
"""
import json
import math
import os
import struct
import sys

GGUF_MAGIC = 0x46554747
ALIGN = 32
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, T_UINT64 = 4, 5, 6, 7, 8, 9, 10
GGML_F32, GGML_BF16 = 0, 30


def s(x):
    b = x.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = s(key) + struct.pack("<I", vtype)
    if vtype == T_STRING:
        return out + s(value)
    if vtype == T_UINT32:
        return out + struct.pack("<I", value)
    if vtype == T_INT32:
        return out + struct.pack("<i", value)
    if vtype == T_FLOAT32:
        return out + struct.pack("<f", value)
    if vtype == T_BOOL:
        return out + struct.pack("<?", value)
    raise ValueError(vtype)


def kv_array(key, etype, values):
    out = s(key) + struct.pack("<IIQ", T_ARRAY, etype, len(values))
    if etype == T_STRING:
        return out + b"".join(s(v) for v in values)
    if etype == T_INT32:
        return out + struct.pack("<%di" % len(values), *values)
    raise ValueError(etype)


class Checkpoint:
    def __init__(self, d):
        self.dir = d
        self.config = json.load(open(os.path.join(d, "config.json")))
        self.where = {}
        index = os.path.join(d, "model.safetensors.index.json")
        files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                header = json.loads(fh.read(n))
            for name, info in header.items():
                if name != "__metadata__":
                    self.where[name] = (path, 8 + n + info["data_offsets"][0], info)

    def read(self, name):
        path, start, info = self.where[name]
        a, b = info["data_offsets"]
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read(b - a), info["dtype"], info["shape"]


def permute_rows(data, rows, cols, elem, n_head):
    """rows ordered (head, half, j) -> (head, j, half): rotate_half to pairs."""
    hd = rows // n_head
    row_bytes = cols * elem
    out = bytearray(len(data))
    k = 0
    for h in range(n_head):
        for j in range(hd // 2):
            for t in range(2):
                old = h * hd + t * (hd // 2) + j
                out[k * row_bytes:(k + 1) * row_bytes] = data[old * row_bytes:(old + 1) * row_bytes]
                k += 1
    return bytes(out)


def llama3_rope_freqs(c):
    rs = c.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return None
    head_dim = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
    base = c.get("rope_theta", 10000.0)
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    factors = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / (base ** (i / head_dim))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return factors


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    ck = Checkpoint(argv[1])
    out_path = argv[2]
    tok_dir = argv[argv.index("--tokenizer") + 1] if "--tokenizer" in argv else argv[1]
    c = ck.config
    n_head, n_kv = c["num_attention_heads"], c["num_key_value_heads"]
    head_dim = c.get("head_dim", c["hidden_size"] // n_head)
    L = c["num_hidden_layers"]
    meta = [
        kv("general.architecture", T_STRING, "llama"),
        kv("general.name", T_STRING, os.path.basename(os.path.normpath(argv[1]))),
        kv("general.alignment", T_UINT32, ALIGN),
        kv("llama.block_count", T_UINT32, L),
        kv("llama.context_length", T_UINT32, c.get("max_position_embeddings", 131072)),
        kv("llama.embedding_length", T_UINT32, c["hidden_size"]),
        kv("llama.feed_forward_length", T_UINT32, c["intermediate_size"]),
        kv("llama.attention.head_count", T_UINT32, n_head),
        kv("llama.attention.head_count_kv", T_UINT32, n_kv),
        kv("llama.attention.key_length", T_UINT32, head_dim),
        kv("llama.attention.value_length", T_UINT32, head_dim),
        kv("llama.rope.dimension_count", T_UINT32, head_dim),
        kv("llama.rope.freq_base", T_FLOAT32, float(c.get("rope_theta", 500000.0))),
        kv("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, float(c.get("rms_norm_eps", 1e-5))),
        kv("llama.vocab_size", T_UINT32, c["vocab_size"]),
    ]
    tj = os.path.join(tok_dir, "tokenizer.json")
    if os.path.exists(tj):
        t = json.load(open(tj))
        vocab = t["model"]["vocab"]
        tokens = [None] * c["vocab_size"]
        types = [1] * c["vocab_size"]
        for k, v in vocab.items():
            if v < len(tokens):
                tokens[v] = k
        for a in t.get("added_tokens", []):
            if a["id"] < len(tokens):
                tokens[a["id"]] = a["content"]
                types[a["id"]] = 3  # control
        for i, tk in enumerate(tokens):
            if tk is None:
                tokens[i] = "[PAD%d]" % i
                types[i] = 5  # unused
        merges = [m if isinstance(m, str) else " ".join(m) for m in t["model"]["merges"]]
        meta += [
            kv("tokenizer.ggml.model", T_STRING, "gpt2"),
            kv("tokenizer.ggml.pre", T_STRING, "llama-bpe"),
            kv_array("tokenizer.ggml.tokens", T_STRING, tokens),
            kv_array("tokenizer.ggml.token_type", T_INT32, types),
            kv_array("tokenizer.ggml.merges", T_STRING, merges),
            kv("tokenizer.ggml.bos_token_id", T_UINT32, 128000),
            kv("tokenizer.ggml.eos_token_id", T_UINT32, 128001),
        ]
    else:
        print("no tokenizer.json: writing the model without a vocabulary (tokenizer.ggml.model none)")
        meta += [kv("tokenizer.ggml.model", T_STRING, "none")]

    # Tensors: (gguf name, checkpoint name, permute heads or None)
    plan = [("token_embd.weight", "model.embed_tokens.weight", None)]
    for l in range(L):
        p = "model.layers.%d." % l
        plan += [
            ("blk.%d.attn_norm.weight" % l, p + "input_layernorm.weight", None),
            ("blk.%d.attn_q.weight" % l, p + "self_attn.q_proj.weight", n_head),
            ("blk.%d.attn_k.weight" % l, p + "self_attn.k_proj.weight", n_kv),
            ("blk.%d.attn_v.weight" % l, p + "self_attn.v_proj.weight", None),
            ("blk.%d.attn_output.weight" % l, p + "self_attn.o_proj.weight", None),
            ("blk.%d.ffn_norm.weight" % l, p + "post_attention_layernorm.weight", None),
            ("blk.%d.ffn_gate.weight" % l, p + "mlp.gate_proj.weight", None),
            ("blk.%d.ffn_up.weight" % l, p + "mlp.up_proj.weight", None),
            ("blk.%d.ffn_down.weight" % l, p + "mlp.down_proj.weight", None),
        ]
    plan.append(("output_norm.weight", "model.norm.weight", None))
    plan.append(("output.weight", "lm_head.weight" if "lm_head.weight" in ck.where else "model.embed_tokens.weight", None))
    freqs = llama3_rope_freqs(c)

    infos, offset = [], 0
    entries = []
    for gname, cname, heads in plan:
        _, dtype, shape = ck.where[cname][2]["dtype"], ck.where[cname][2]["dtype"], ck.where[cname][2]["shape"]
        gtype = {"BF16": GGML_BF16, "F32": GGML_F32}[dtype]
        elem = 2 if dtype == "BF16" else 4
        if len(shape) == 1:  # norms go in as F32, as llama.cpp's converter writes them
            gtype, elem = GGML_F32, 4
        size = elem
        for d in shape:
            size *= d
        entries.append((gname, cname, heads, gtype, shape, elem, offset, size))
        offset += (size + ALIGN - 1) // ALIGN * ALIGN
    if freqs is not None:
        entries.append(("rope_freqs.weight", None, None, GGML_F32, [len(freqs)], 4, offset, 4 * len(freqs)))
        offset += (4 * len(freqs) + ALIGN - 1) // ALIGN * ALIGN
    for gname, _, _, gtype, shape, _, off, _ in entries:
        dims = list(reversed(shape))  # GGUF: fastest dimension first
        infos.append(s(gname) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims) +
                     struct.pack("<IQ", gtype, off))
    header = struct.pack("<IIQQ", GGUF_MAGIC, 3, len(entries), len(meta)) + b"".join(meta) + b"".join(infos)
    with open(out_path, "wb") as f:
        f.write(header)
        f.write(b"\0" * ((-len(header)) % ALIGN))
        for gname, cname, heads, gtype, shape, elem, off, size in entries:
            if cname is None:
                data = struct.pack("<%df" % len(freqs), *freqs)
            else:
                data, dtype, _ = ck.read(cname)
                if len(shape) == 1 and dtype == "BF16":
                    n = len(data) // 2
                    data = struct.pack("<%dI" % n, *(v << 16 for v in struct.unpack("<%dH" % n, data)))
                if heads is not None:
                    data = permute_rows(data, shape[0], shape[1], elem, heads)
            f.write(data)
            f.write(b"\0" * ((-len(data)) % ALIGN))
    print("wrote %s: %d tensors, %.2f GB" % (out_path, len(entries), os.path.getsize(out_path) / 1e9))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
