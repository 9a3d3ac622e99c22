"""PyTorch's side of the GPT-2 generation figure (W6 generation): greedy decoding with a
key/value cache on the weights of a GPT-2 directory, the loop transformers' generate() runs.

  torch_generate.py THREADS MODEL_DIR NEW_TOKENS [--bf16 1]

Starts from <|endoftext|> (id 50256, as `damo generate --prompt ""`), appends NEW_TOKENS
argmax ids one position at a time and prints one JSON object: the ids, the seconds and
tokens/s. --bf16 1 runs the weights and the loop in torch.bfloat16.
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from safetensors_writer import read as read_safetensors  # noqa: E402


def main(argv):
    threads, model_dir, n_new = int(argv[1]), argv[2], int(argv[3])
    bf16 = "--bf16" in argv and argv[argv.index("--bf16") + 1] == "1"
    torch.set_num_threads(threads)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    tensors, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    dtype = torch.bfloat16 if bf16 else torch.float32
    w = {k.replace("transformer.", ""): torch.from_numpy(v.copy()).to(dtype) for k, v in tensors.items()}
    L, H, C = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
    eps, d = cfg.get("layer_norm_epsilon", 1e-5), C // H
    keys = [None] * L
    values = [None] * L

    def step(token, pos):
        x = w["wte.weight"][token] + w["wpe.weight"][pos]
        for i in range(L):
            p = "h.%d." % i
            a = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            q, k, v = (a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]).split(C)
            keys[i] = k.view(1, H, d) if keys[i] is None else torch.cat([keys[i], k.view(1, H, d)])
            values[i] = v.view(1, H, d) if values[i] is None else torch.cat([values[i], v.view(1, H, d)])
            s = torch.einsum("hd,thd->ht", q.view(H, d), keys[i]) / math.sqrt(d)
            o = torch.einsum("ht,thd->hd", torch.softmax(s, dim=-1), values[i]).reshape(C)
            x = x + o @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            a = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            a = F.gelu(a @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"], approximate="tanh")
            x = x + a @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
        return w["wte.weight"] @ x

    ids = [50256]
    with torch.no_grad():
        t0 = time.perf_counter()
        for pos in range(n_new):
            logits = step(ids[-1], pos)
            ids.append(int(torch.argmax(logits.float())))
        seconds = time.perf_counter() - t0
    print(json.dumps({"threads": threads, "bf16": bf16, "new_tokens": n_new, "seconds": round(seconds, 4),
                      "tokens_per_s": n_new / seconds, "ids": ids[1:], "torch": torch.__version__}))


if __name__ == "__main__":
    main(sys.argv)
