#!/usr/bin/python3
"""Writes tests/fixtures/privacy_ref.json for tests/test_privacy.c: the RDP of the
Poisson-subsampled Gaussian mechanism computed independently of damo's series, by numerical
integration of its definition, and (epsilon, delta) from it by both conversions.

One step's RDP at order a is log(A) / (a - 1) with A the a-th moment of the privacy loss
ratio: A = integral of N(z; 0, s^2) ((1 - q) + q exp((2z - 1) / (2 s^2)))^a dz. It is
integrated here on a fine grid in log space (trapezoids over +-40 s around the mass), so
integer and fractional orders take the same road. Run: /usr/bin/python3 tests/ref/gen_privacy.py
"""
import json
import math
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "privacy_ref.json")
ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def log_moment(q, s, a):
    lo, hi = -40 * s, 40 * s + 2 + a / (s * s)  # the integrand's mass moves right as a grows
    z = np.linspace(lo, hi, 400001)
    log_phi = -0.5 * (z / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
    log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * s * s))
    f = log_phi + a * log_ratio
    m = f.max()
    return m + math.log(np.trapz(np.exp(f - m), z))


def rdp(q, s, steps, a):
    return steps * log_moment(q, s, a) / (a - 1)


def epsilon(q, s, steps, delta, balle):
    best = math.inf
    for a in ORDERS:
        r = rdp(q, s, steps, a)
        e = r + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) if balle else r - math.log(delta) / (a - 1)
        best = min(best, e)
    return best


def main():
    cases = []
    for q, s, a in [(0.01, 1.0, 2.0), (0.01, 1.0, 8.0), (0.05, 0.8, 3.5), (256 / 60000, 1.1, 8.8), (0.02, 2.0, 32.0),
                    (0.1, 1.5, 1.3), (0.004, 0.7, 3.8), (0.3, 1.2, 5.0)]:
        cases.append({"q": q, "sigma": s, "alpha": a, "rdp": rdp(q, s, 1, a)})
    eps = []
    for q, s, steps, d in [(256 / 60000, 1.1, 60 * 60000 / 256, 1e-5), (0.01, 1.0, 1000, 1e-5), (0.05, 2.0, 300, 1e-6)]:
        eps.append({"q": q, "sigma": s, "steps": steps, "delta": d, "classic": epsilon(q, s, steps, d, False),
                    "balle": epsilon(q, s, steps, d, True)})
    with open(OUT, "w") as f:
        json.dump({"generator": "tests/ref/gen_privacy.py", "rdp": cases, "epsilon": eps}, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
