#!/usr/bin/python3
"""Writes tests/fixtures/cnn.safetensors: PyTorch references for damo's image ops.

Run with Debian's interpreter: /usr/bin/python3 tests/ref/gen_cnn.py

damo is channels-last (N, H, W, C) with Keras kernels (KH, KW, C, F); torch is NCHW with
(F, C, KH, KW), so the script permutes on the way in and out. Paddings are explicit
(top, left, bottom, right); torch pads symmetrically, so inputs are padded with F.pad (zeros
for convolution; for pooling the padding must never win or count, handled by -inf padding
for max and by dividing by the real-pixel count for average). For each case <case>:
    <case>.x (and .kernel / .gamma .beta .mean .var), <case>.dout, <case>.out,
    <case>.grad_x (and .grad_kernel / .grad_gamma .grad_beta),
    batch norm also <case>.new_mean, <case>.new_var (running statistics after one forward).
Computed in float64 from float32-rounded inputs; seeded, so the bytes are stable.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "cnn.safetensors")
D = torch.float64

# name, N, H, W, C, KH, KW, F, stride (h, w), padding (top, left, bottom, right)
CONV = [
    ("conv_3x3_same", 2, 5, 5, 3, 3, 3, 4, (1, 1), (1, 1, 1, 1)),
    ("conv_valid_odd", 2, 7, 9, 1, 3, 3, 2, (1, 1), (0, 0, 0, 0)),
    ("conv_stride2_same", 3, 7, 6, 2, 3, 3, 5, (2, 2), (1, 1, 1, 1)),
    ("conv_asym_same", 2, 6, 6, 3, 3, 3, 2, (2, 2), (0, 0, 1, 1)),
    ("conv_5x5", 2, 6, 7, 4, 5, 5, 3, (1, 1), (2, 2, 2, 2)),
    ("conv_1x1", 2, 4, 3, 5, 1, 1, 6, (1, 1), (0, 0, 0, 0)),
    ("conv_2x3_strided", 2, 8, 9, 3, 2, 3, 4, (2, 3), (0, 1, 1, 1)),
]
# name, kind, N, H, W, C, pool (h, w), stride (h, w), padding
POOL = [
    ("maxpool_2x2", "max", 2, 6, 6, 3, (2, 2), (2, 2), (0, 0, 0, 0)),
    ("maxpool_3x3_s2_same", "max", 2, 7, 7, 2, (3, 3), (2, 2), (1, 1, 1, 1)),
    ("maxpool_odd_valid", "max", 1, 7, 5, 4, (3, 3), (1, 1), (0, 0, 0, 0)),
    ("avgpool_2x2", "avg", 2, 6, 6, 3, (2, 2), (2, 2), (0, 0, 0, 0)),
    ("avgpool_3x3_s2_same", "avg", 2, 7, 7, 2, (3, 3), (2, 2), (1, 1, 1, 1)),
    ("avgpool_2x2_odd_same", "avg", 1, 5, 5, 2, (2, 2), (2, 2), (0, 0, 1, 1)),
]


def f32(t):
    return t.float().double()


def save(store, name, **tensors):
    for k, v in tensors.items():
        store["%s.%s" % (name, k)] = v.detach().float().numpy()


def nhwc(t):
    return t.permute(0, 2, 3, 1)


def nchw(t):
    return t.permute(0, 3, 1, 2)


def conv_case(out, name, N, H, W, C, KH, KW, Fo, stride, pad):
    x = f32(torch.randn(N, H, W, C, dtype=D)).requires_grad_()
    k = f32(torch.randn(KH, KW, C, Fo, dtype=D) * 0.4).requires_grad_()
    xp = F.pad(nchw(x), (pad[1], pad[3], pad[0], pad[2]))
    y = nhwc(F.conv2d(xp, k.permute(3, 2, 0, 1), stride=stride))
    dout = f32(torch.randn(*y.shape, dtype=D))
    (y * dout).sum().backward()
    save(out, name, x=x, kernel=k, dout=dout, out=y, grad_x=x.grad, grad_kernel=k.grad)


def pool_case(out, name, kind, N, H, W, C, pool, stride, pad):
    # Distinct values spaced apart: no near-ties for max pooling's finite differences.
    perm = torch.randperm(N * H * W * C).to(D)
    x = f32((perm / (N * H * W * C) * 4 - 2).reshape(N, H, W, C)).requires_grad_()
    xc = nchw(x)
    if kind == "max":
        xp = F.pad(xc, (pad[1], pad[3], pad[0], pad[2]), value=float("-inf"))
        y = F.max_pool2d(xp, pool, stride)
    else:
        xp = F.pad(xc, (pad[1], pad[3], pad[0], pad[2]))
        ones = F.pad(torch.ones_like(xc), (pad[1], pad[3], pad[0], pad[2]))
        y = F.avg_pool2d(xp, pool, stride) / F.avg_pool2d(ones, pool, stride)
    y = nhwc(y)
    dout = f32(torch.randn(*y.shape, dtype=D))
    (y * dout).sum().backward()
    save(out, name, x=x, dout=dout, out=y, grad_x=x.grad)


def gap_case(out):
    x = f32(torch.randn(2, 3, 4, 5, dtype=D)).requires_grad_()
    y = x.mean(dim=(1, 2))
    dout = f32(torch.randn(*y.shape, dtype=D))
    (y * dout).sum().backward()
    save(out, "global_avg_pool", x=x, dout=dout, out=y, grad_x=x.grad)


def bn_case(out, name, shape, training, momentum=0.9, eps=1e-3):
    C = shape[-1]
    x = f32(torch.randn(*shape, dtype=D) * 2 + 0.5).requires_grad_()
    gamma = f32(torch.rand(C, dtype=D) + 0.5).requires_grad_()
    beta = f32(torch.randn(C, dtype=D) * 0.3).requires_grad_()
    mean = f32(torch.randn(C, dtype=D) * 0.1)
    var = f32(torch.rand(C, dtype=D) + 0.5)
    rm, rv = mean.clone(), var.clone()
    xc = x.reshape(-1, C)  # channels-last: normalise over every other axis
    # torch's momentum is Keras' 1 - momentum
    y = F.batch_norm(xc, rm, rv, gamma, beta, training=training, momentum=1 - momentum, eps=eps).reshape(shape)
    dout = f32(torch.randn(*shape, dtype=D))
    (y * dout).sum().backward()
    save(out, name, x=x, gamma=gamma, beta=beta, mean=mean, var=var, dout=dout, out=y, grad_x=x.grad,
         grad_gamma=gamma.grad, grad_beta=beta.grad, new_mean=rm, new_var=rv)


def main():
    torch.manual_seed(11)
    out = {}
    for case in CONV:
        conv_case(out, *case)
    for case in POOL:
        pool_case(out, *case)
    gap_case(out)
    bn_case(out, "bn_train_4d", (3, 4, 5, 6), True)
    bn_case(out, "bn_train_2d", (8, 5), True)
    bn_case(out, "bn_infer_4d", (2, 3, 3, 4), False)
    safetensors_writer.write(OUT_PATH, out)
    print("wrote %s (%d tensors)" % (OUT_PATH, len(out)))


if __name__ == "__main__":
    main()
