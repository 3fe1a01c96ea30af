"""An independent Llama 3 forward pass in PyTorch, written plainly from
Hugging Face's modeling_llama math (rotate_half RoPE with llama3 scaling,
repeat_kv, float32 RMSNorm), reading Hugging Face checkpoints directly.

Used by torch_parity_test.py as the oracle for strata's engine. It shares no
code with strata: its own safetensors reader, its own RoPE tables.
"""
import json
import math
import os
import struct

import numpy as np
import torch


def _read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[base + b:base + end]
        if e["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4").copy()
        elif e["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            raise ValueError("unsupported dtype " + e["dtype"])
        out[name] = torch.from_numpy(arr.reshape(e["shape"]))
    return out


def load_checkpoint(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        for name in files:
            weights.update(_read_safetensors(os.path.join(model_dir, name)))
    else:
        weights = _read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return config, weights


def llama3_inv_freq(config):
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    base = config["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = config.get("rope_scaling")
    if not rs:
        return inv_freq
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, weight, eps):
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return weight * x


def repeat_kv(x, n_rep):
    # x: [kv_heads, seq, d] -> [kv_heads * n_rep, seq, d]
    if n_rep == 1:
        return x
    kv, s, d = x.shape
    return x[:, None, :, :].expand(kv, n_rep, s, d).reshape(kv * n_rep, s, d)


@torch.no_grad()
def forward(config, w, ids, position_offset=0):
    """Logits [len(ids), vocab] for a whole sequence starting at position_offset."""
    h = config["hidden_size"]
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads") or nh
    d = config.get("head_dim") or h // nh
    eps = config["rms_norm_eps"]
    T = len(ids)
    inv_freq = llama3_inv_freq(config)
    pos = torch.arange(position_offset, position_offset + T, dtype=torch.int64).float()
    freqs = pos[:, None] @ inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)

    x = w["model.embed_tokens.weight"][torch.tensor(ids, dtype=torch.long)]
    for l in range(config["num_hidden_layers"]):
        p = "model.layers.%d." % l
        hs = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (hs @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, d).transpose(0, 1)
        k = (hs @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, d).transpose(0, 1)
        v = (hs @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, d).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, nh // nkv)
        v = repeat_kv(v, nh // nkv)
        scores = q @ k.transpose(1, 2) / math.sqrt(d) + mask
        probs = torch.softmax(scores.float(), dim=-1)
        attn = (probs @ v).transpose(0, 1).reshape(T, nh * d)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        hs = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = hs @ w[p + "mlp.gate_proj.weight"].T
        up = hs @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    lm_head = w.get("lm_head.weight")
    if lm_head is None:
        lm_head = w["model.embed_tokens.weight"]
    return x @ lm_head.T
