/* tensor.c - dense row-major tensors: creation, copies, reshapes and row gathers (the
 * batching primitive). Storage is one aligned block per tensor. */
#include "core/core.h"

#include <stdio.h>

size_t damo_dtype_size(damo_dtype t) {
  switch (t) {
  case DAMO_F32: return 4;
  case DAMO_I32: return 4;
  case DAMO_U8: return 1;
  case DAMO_I8: return 1;
  case DAMO_BF16: return 2;
  }
  return 0;
}

const char *damo_dtype_name(damo_dtype t) {
  switch (t) {
  case DAMO_F32: return "f32";
  case DAMO_I32: return "i32";
  case DAMO_U8: return "u8";
  case DAMO_I8: return "i8";
  case DAMO_BF16: return "bf16";
  }
  return "?";
}

const char *damo_device_name(damo_device d) {
  switch (d) {
  case DAMO_DEVICE_CPU: return "cpu";
  case DAMO_DEVICE_CUDA: return "cuda";
  }
  return "unknown device";
}

static damo_status check_shape(damo_dtype dtype, int ndim, const int64_t *shape, size_t *bytes) {
  if (damo_dtype_size(dtype) == 0) return damo_error(DAMO_ERR_INVALID_ARG, "unknown dtype %d", (int)dtype);
  if (ndim < 0 || ndim > DAMO_MAX_DIMS)
    return damo_error(DAMO_ERR_SHAPE, "tensor rank %d is outside 0..%d", ndim, DAMO_MAX_DIMS);
  size_t n = damo_dtype_size(dtype);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return damo_error(DAMO_ERR_SHAPE, "negative dimension %lld at axis %d", (long long)shape[i], i);
    if (damo_mul_overflow(n, (size_t)shape[i], &n))
      return damo_error(DAMO_ERR_SHAPE, "tensor size overflows at axis %d", i);
  }
  *bytes = n;
  return DAMO_OK;
}

static damo_tensor *tensor_header(damo_dtype dtype, int ndim, const int64_t *shape) {
  damo_tensor *t = calloc(1, sizeof *t);
  if (!t) {
    damo_error(DAMO_ERR_NOMEM, "out of memory for a tensor header");
    return NULL;
  }
  t->dtype = dtype;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  return t;
}

damo_tensor *damo_tensor_new(damo_dtype dtype, int ndim, const int64_t *shape) {
  size_t bytes;
  if (check_shape(dtype, ndim, shape, &bytes) != DAMO_OK) return NULL;
  damo_tensor *t = tensor_header(dtype, ndim, shape);
  if (!t) return NULL;
  t->data = damo_calloc(bytes);
  if (!t->data) {
    free(t);
    return NULL;
  }
  t->owns_data = 1;
  return t;
}

damo_tensor *damo_tensor_wrap(damo_dtype dtype, int ndim, const int64_t *shape, void *data) {
  size_t bytes;
  if (check_shape(dtype, ndim, shape, &bytes) != DAMO_OK) return NULL;
  damo_tensor *t = tensor_header(dtype, ndim, shape);
  if (t) t->data = data;
  return t;
}

void damo_tensor_free(damo_tensor *t) {
  if (!t) return;
  if (t->owns_data) damo_free(t->data);
  free(t);
}

int64_t damo_tensor_numel(const damo_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

size_t damo_tensor_nbytes(const damo_tensor *t) { return (size_t)damo_tensor_numel(t) * damo_dtype_size(t->dtype); }

/* The functions here read data with the CPU; a tensor on another device is refused. */
static int host_only(const damo_tensor *t, const char *what) {
  if (t->device == DAMO_DEVICE_CPU) return 1;
  damo_error(DAMO_ERR_INVALID_ARG, "%s: the tensor is on %s; copy it to the host through its backend first", what,
             damo_device_name(t->device));
  return 0;
}

damo_tensor *damo_tensor_clone(const damo_tensor *t) {
  if (!host_only(t, "tensor clone")) return NULL;
  damo_tensor *c = damo_tensor_new(t->dtype, t->ndim, t->shape);
  if (c) memcpy(c->data, t->data, damo_tensor_nbytes(t));
  return c;
}

static size_t row_bytes(const damo_tensor *t) {
  size_t n = damo_dtype_size(t->dtype);
  for (int i = 1; i < t->ndim; i++) n *= (size_t)t->shape[i];
  return n;
}

damo_tensor *damo_tensor_gather_rows(const damo_tensor *t, const int64_t *idx, int64_t n) {
  if (!host_only(t, "gather rows")) return NULL;
  if (t->ndim < 1) {
    damo_error(DAMO_ERR_SHAPE, "cannot gather rows of a scalar");
    return NULL;
  }
  int64_t shape[DAMO_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape);
  shape[0] = n;
  damo_tensor *out = damo_tensor_new(t->dtype, t->ndim, shape);
  if (!out) return NULL;
  size_t rb = row_bytes(t);
  for (int64_t i = 0; i < n; i++) {
    if (idx[i] < 0 || idx[i] >= t->shape[0]) {
      damo_tensor_free(out);
      damo_error(DAMO_ERR_INVALID_ARG, "row index %lld out of range [0, %lld)", (long long)idx[i], (long long)t->shape[0]);
      return NULL;
    }
    memcpy((char *)out->data + (size_t)i * rb, (const char *)t->data + (size_t)idx[i] * rb, rb);
  }
  return out;
}

damo_tensor *damo_tensor_slice_rows(const damo_tensor *t, int64_t start, int64_t count) {
  if (!host_only(t, "slice rows")) return NULL;
  if (t->ndim < 1 || start < 0 || count < 0 || start + count > t->shape[0]) {
    damo_error(DAMO_ERR_INVALID_ARG, "row slice [%lld, %lld) out of range of %lld rows", (long long)start,
               (long long)(start + count), t->ndim ? (long long)t->shape[0] : 0LL);
    return NULL;
  }
  int64_t shape[DAMO_MAX_DIMS];
  memcpy(shape, t->shape, sizeof shape);
  shape[0] = count;
  damo_tensor *out = damo_tensor_new(t->dtype, t->ndim, shape);
  if (!out) return NULL;
  size_t rb = row_bytes(t);
  memcpy(out->data, (const char *)t->data + (size_t)start * rb, (size_t)count * rb);
  return out;
}

damo_status damo_tensor_reshape(damo_tensor *t, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > DAMO_MAX_DIMS) return damo_error(DAMO_ERR_SHAPE, "reshape rank %d is outside 0..%d", ndim, DAMO_MAX_DIMS);
  int64_t total = damo_tensor_numel(t), known = 1;
  int infer = -1;
  int64_t s[DAMO_MAX_DIMS];
  for (int i = 0; i < ndim; i++) {
    s[i] = shape[i];
    if (shape[i] == -1) {
      if (infer >= 0) return damo_error(DAMO_ERR_SHAPE, "reshape has more than one -1");
      infer = i;
    } else if (shape[i] < 0) {
      return damo_error(DAMO_ERR_SHAPE, "reshape has negative dimension %lld", (long long)shape[i]);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || total % known) return damo_error(DAMO_ERR_SHAPE, "cannot infer -1: %lld elements", (long long)total);
    s[infer] = total / known;
    known = total;
  }
  if (known != total) {
    char a[96], b[96];
    return damo_error(DAMO_ERR_SHAPE, "cannot reshape %s to %s: element counts differ",
                      damo_shape_string(t->ndim, t->shape, a, sizeof a), damo_shape_string(ndim, s, b, sizeof b));
  }
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = s[i];
  return DAMO_OK;
}

char *damo_shape_string(int ndim, const int64_t *shape, char *buf, size_t cap) {
  size_t used = 0;
  if (cap == 0) return buf;
  buf[0] = '\0';
  used += (size_t)snprintf(buf + used, cap - used, "(");
  for (int i = 0; i < ndim && used < cap; i++)
    used += (size_t)snprintf(buf + used, cap - used, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (used < cap) snprintf(buf + used, cap - used, ndim == 1 ? ",)" : ")");
  return buf;
}

damo_tensor *damo_tensor_to_f32(const damo_tensor *t) {
  if (!host_only(t, "tensor to f32")) return NULL;
  damo_tensor *o = damo_tensor_new(DAMO_F32, t->ndim, t->shape);
  if (!o) return NULL;
  int64_t n = damo_tensor_numel(t);
  float *d = o->data;
  switch (t->dtype) {
  case DAMO_F32: memcpy(d, t->data, (size_t)n * 4); break;
  case DAMO_I32:
    for (int64_t i = 0; i < n; i++) d[i] = (float)((const int32_t *)t->data)[i];
    break;
  case DAMO_U8:
    for (int64_t i = 0; i < n; i++) d[i] = (float)((const uint8_t *)t->data)[i];
    break;
  case DAMO_BF16:
    for (int64_t i = 0; i < n; i++) d[i] = damo_f32_from_bf16(((const uint16_t *)t->data)[i]);
    break;
  case DAMO_I8:
    for (int64_t i = 0; i < n; i++) d[i] = (float)((const int8_t *)t->data)[i];
    break;
  }
  return o;
}

damo_tensor *damo_tensor_to_bf16(const damo_tensor *t) {
  if (!host_only(t, "tensor to bf16")) return NULL;
  if (t->dtype != DAMO_F32 && t->dtype != DAMO_BF16) {
    damo_error(DAMO_ERR_INVALID_ARG, "tensor to bf16: a %s tensor (only f32 rounds to bf16)", damo_dtype_name(t->dtype));
    return NULL;
  }
  damo_tensor *o = damo_tensor_new(DAMO_BF16, t->ndim, t->shape);
  if (!o) return NULL;
  int64_t n = damo_tensor_numel(t);
  if (t->dtype == DAMO_BF16) {
    memcpy(o->data, t->data, (size_t)n * 2);
    return o;
  }
  const float *s = t->data;
  uint16_t *d = o->data;
  for (int64_t i = 0; i < n; i++) d[i] = damo_bf16_from_f32(s[i]);
  return o;
}
