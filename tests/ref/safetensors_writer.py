"""A tiny, dependency-free safetensors writer (and reader) for damo's test fixtures.

Format (https://github.com/huggingface/safetensors):
  - 8 bytes: little-endian u64 N, the length of the JSON header
  - N bytes: JSON object {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}
    plus an optional "__metadata__": {str: str}; padded with spaces to a multiple of 8
  - the raw little-endian tensor bytes; data_offsets are relative to the start of this block

The output is deterministic: keys are sorted, tensors are laid out in name order, the JSON is
compact, so the same arrays always give the same bytes.

Only numpy is needed. Supported dtypes: float32 (F32), int32 (I32), uint8 (U8).
"""
import json
import struct

import numpy as np

_DTYPES = {
    np.dtype("float32"): "F32",
    np.dtype("int32"): "I32",
    np.dtype("uint8"): "U8",
}
_NP_OF = {"F32": "<f4", "I32": "<i4", "U8": "u1"}


def encode(tensors, metadata=None):
    """Returns the safetensors bytes for a {name: numpy array} mapping.

    Arrays must already be float32, int32 or uint8 (no silent conversion: a float64 array is an
    error, so a fixture never stores a dtype it did not mean to).
    """
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"bad tensor name {name!r}")
        arr = np.asarray(tensors[name])
        if arr.dtype not in _DTYPES:
            raise TypeError(f"{name}: dtype {arr.dtype} not supported (use float32, int32 or uint8)")
        code = _DTYPES[arr.dtype]
        raw = np.ascontiguousarray(arr, dtype=_NP_OF[code]).tobytes(order="C")
        header[name] = {
            "dtype": code,
            "shape": [int(d) for d in arr.shape],
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write(path, tensors, metadata=None):
    """Writes {name: array} to path as safetensors (see encode)."""
    data = encode(tensors, metadata)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def read(path):
    """Reads a safetensors file written by this module (or any F32/I32/U8 one).

    Returns ({name: numpy array}, metadata dict).
    """
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    body = data[8 + n :]
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = np.dtype(_NP_OF[info["dtype"]])
        out[name] = np.frombuffer(body[b:e], dtype=dt).reshape(info["shape"]).copy()
    return out, meta


if __name__ == "__main__":
    # Self-check: round trip.
    import os
    import tempfile

    t = {
        "b": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a": np.array([1, -2, 3], dtype=np.int32),
        "s": np.array([0.5], dtype=np.float32),
    }
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.safetensors")
        write(p, t, {"k": "v"})
        back, meta = read(p)
        raw = open(p, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    assert meta == {"k": "v"}
    for k, v in t.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and (back[k] == v).all(), k
    print("safetensors_writer: ok")
