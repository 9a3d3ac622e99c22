#!/usr/bin/env python3
"""Writes the tiny .npy fixtures in tests/fixtures/npy/ that tests/test_io.c loads, so the
C reader is checked against files numpy itself wrote (not just its own round trips).
Run from the repository root with Debian's python3-numpy:  /usr/bin/python3 tests/ref/make_npy_fixtures.py
The expected values are repeated in test_io.c; change both together."""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "npy")


def save(name, arr, version=None, fortran=False):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        if fortran:
            arr = np.asfortranarray(arr)
        np.lib.format.write_array(f, arr, version=version, allow_pickle=False)


def main():
    os.makedirs(OUT, exist_ok=True)
    save("f4_2x3.npy", (np.arange(6, dtype="<f4").reshape(2, 3) * 0.5 - 1))
    save("f8_3.npy", np.array([1.5, -2.25, 1e10], dtype="<f8"))
    save("f2_3.npy", np.array([0.5, -2.0, 65504.0], dtype="<f2"))
    save("f4_be_2.npy", np.array([1.5, -3.0], dtype=">f4"))
    save("i1_3.npy", np.array([-128, 0, 127], dtype="i1"))
    save("i2_be_3.npy", np.array([-2, 300, 7], dtype=">i2"))
    save("u2_2.npy", np.array([65535, 1], dtype="<u2"))
    save("i8_4.npy", np.array([-3, 0, 7, 2**31 - 1], dtype="<i8"))
    save("u1_2x2.npy", np.array([[0, 255], [1, 128]], dtype="u1"))
    save("b1_3.npy", np.array([True, False, True]))
    save("scalar_f4.npy", np.array(3.25, dtype="<f4"))
    save("empty_f4_0x3.npy", np.zeros((0, 3), dtype="<f4"))
    save("v2_f4_2.npy", np.array([1.0, 2.0], dtype="<f4"), version=(2, 0))
    save("v3_i4_2.npy", np.array([-5, 6], dtype="<i4"), version=(3, 0))
    save("fortran_f4_2x2.npy", np.array([[1, 2], [3, 4]], dtype="<f4"), fortran=True)
    save("i8_overflow.npy", np.array([1, 2**40], dtype="<i8"))
    save("u4_overflow.npy", np.array([4000000000], dtype="<u4"))
    save("f8_overflow.npy", np.array([0.0, 1e300], dtype="<f8"))
    save("c8_2.npy", np.array([1 + 2j, 3], dtype="<c8"))


if __name__ == "__main__":
    main()
