#!/usr/bin/python3
"""Writes tests/fixtures/explain.safetensors for tests/test_explain.c: attributions by PyTorch
autograd on the same weights as two damo models.

  mlp: input (6, 5) -> flatten -> dense_1 (8, tanh) -> dense_2 (4; softmax in damo, so the
       logits are its pre-activation)
  cnn: input (8, 8, 2) NHWC -> conv2d_1 (3 filters 3x3, valid, relu) -> max_pooling2d_1 (2)
       -> flatten (NHWC order) -> dense_1 (3; softmax)

Stored per model (prefix "mlp." / "cnn."): the weights under damo's names (dense kernels
(in, out), conv kernels (kh, kw, in, out) as Keras keeps them), x (3 examples), targets (3,
I32), and for each example the gradient of its target logit with respect to x as saliency
(|grad|), gradient x input, and Integrated Gradients from a black baseline by the midpoint
rule at 16 steps; for the CNN also Grad-CAM at conv2d_1 (grad_cam). Float64 from float32-rounded values, seeded. Run: /usr/bin/python3
tests/ref/gen_explain.py
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "explain.safetensors")
D = torch.float64


def f32(t):
    return t.detach().float().numpy()


def rounded(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).float().double()


def mlp_logits(w, x):
    h = torch.tanh(x.reshape(x.shape[0], -1) @ w["dense_1.kernel"] + w["dense_1.bias"])
    return h @ w["dense_2.kernel"] + w["dense_2.bias"]


def cnn_logits(w, x):
    k = w["conv2d_1.kernel"].permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    h = F.relu(F.conv2d(x.permute(0, 3, 1, 2), k, w["conv2d_1.bias"]))
    h = F.max_pool2d(h, 2).permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # back to NHWC order
    return h @ w["dense_1.kernel"] + w["dense_1.bias"]


def attributions(logits_fn, w, x, targets, steps=16):
    xg = x.clone().requires_grad_(True)
    picked = logits_fn(w, xg).gather(1, targets[:, None]).sum()
    (grad,) = torch.autograd.grad(picked, xg)
    ig = torch.zeros_like(x)
    for k in range(steps):  # midpoints of [0, 1], black (zero) baseline
        a = (k + 0.5) / steps
        p = (a * x).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(logits_fn(w, p).gather(1, targets[:, None]).sum(), p)
        ig += g / steps
    return {"saliency": grad.abs(), "gradient_x_input": grad * x, "ig16": ig * x}


def grad_cam(w, x, targets):
    """Grad-CAM at conv2d_1's output (after its relu): alpha_k = the mean over positions of
    d logit / d A_k, cam = relu(sum_k alpha_k A_k), resized bilinearly (half-pixel centres) to
    the input's 8 x 8 and repeated over its 2 channels, as damo's attributions have its shape."""
    k = w["conv2d_1.kernel"].permute(3, 2, 0, 1)
    a = F.relu(F.conv2d(x.permute(0, 3, 1, 2), k, w["conv2d_1.bias"])).detach().requires_grad_(True)
    h = F.max_pool2d(a, 2).permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    logits = h @ w["dense_1.kernel"] + w["dense_1.bias"]
    (g,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), a)
    alpha = g.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((alpha * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)
    return cam.permute(0, 2, 3, 1).expand(-1, -1, -1, 2)


def main():
    torch.manual_seed(20261205)
    out = {}
    mlp = {"dense_1.kernel": rounded(30, 8, scale=0.5), "dense_1.bias": rounded(8, scale=0.1),
           "dense_2.kernel": rounded(8, 4, scale=0.5), "dense_2.bias": rounded(4, scale=0.1)}
    x = rounded(3, 6, 5)
    targets = torch.tensor([0, 3, 1])
    for name, value in {**mlp, "x": x, **attributions(mlp_logits, mlp, x, targets)}.items():
        out["mlp." + name] = f32(value)
    out["mlp.targets"] = targets.numpy().astype(np.int32)

    cnn = {"conv2d_1.kernel": rounded(3, 3, 2, 3, scale=0.4), "conv2d_1.bias": rounded(3, scale=0.1),
           "dense_1.kernel": rounded(27, 3, scale=0.4), "dense_1.bias": rounded(3, scale=0.1)}
    x = rounded(3, 8, 8, 2)
    targets = torch.tensor([2, 0, 1])
    for name, value in {**cnn, "x": x, **attributions(cnn_logits, cnn, x, targets)}.items():
        out["cnn." + name] = f32(value)
    out["cnn.targets"] = targets.numpy().astype(np.int32)
    out["cnn.grad_cam"] = f32(grad_cam(cnn, x, targets))
    safetensors_writer.write(OUT_PATH, out, {"generator": "tests/ref/gen_explain.py"})
    print("wrote", OUT_PATH, len(out), "tensors")


if __name__ == "__main__":
    main()
