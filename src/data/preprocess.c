/* preprocess.c - the in-place data preparation steps applied before training: scaling,
 * per-feature standardization (fit on the training set, applied to any set), and the
 * sanity checks that turn bad labels or NaNs into a clear error before they become a
 * mysterious loss curve. Statistics accumulate in double and use two passes (mean, then
 * squared deviations) so large or offset data does not lose precision. */
#include "core/core.h"

#include <math.h>
#include <stdio.h>

#define STD_FLOOR 1e-7

void damo_scale(damo_tensor *x, float factor) {
  if (!x) return;
  if (x->dtype != DAMO_F32) {
    /* No status to return: record why nothing happened. */
    damo_error(DAMO_ERR_INVALID_ARG, "scale: expected an f32 tensor, got %s", damo_dtype_name(x->dtype));
    return;
  }
  float *d = damo_tensor_f32(x);
  int64_t n = damo_tensor_numel(x);
  for (int64_t i = 0; i < n; i++) d[i] *= factor;
}

/* Rows and per-row features of x (N, ...) as a matrix. */
static damo_status as_matrix(const damo_tensor *x, const char *fn, int64_t *rows, int64_t *feats) {
  if (!x) return damo_error(DAMO_ERR_INVALID_ARG, "%s: NULL tensor", fn);
  if (x->dtype != DAMO_F32)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: expected an f32 tensor, got %s", fn, damo_dtype_name(x->dtype));
  if (x->ndim < 1) return damo_error(DAMO_ERR_SHAPE, "%s: expected a tensor (N, ...), got a scalar", fn);
  *rows = x->shape[0];
  *feats = 1;
  for (int i = 1; i < x->ndim; i++) *feats *= x->shape[i];
  return DAMO_OK;
}

damo_status damo_standardize_fit(const damo_tensor *x, damo_tensor **mean, damo_tensor **std) {
  if (!mean || !std) return damo_error(DAMO_ERR_INVALID_ARG, "standardize_fit: NULL output");
  *mean = *std = NULL;
  int64_t n = 0, f = 0;
  damo_status s = as_matrix(x, "standardize_fit", &n, &f);
  if (s) return s;
  if (n < 1) return damo_error(DAMO_ERR_SHAPE, "standardize_fit: cannot fit on 0 rows");
  damo_tensor *m = damo_tensor_new(DAMO_F32, x->ndim - 1, x->shape + 1);
  damo_tensor *sd = damo_tensor_new(DAMO_F32, x->ndim - 1, x->shape + 1);
  double *acc = calloc((size_t)f + 1, sizeof *acc);
  if (!m || !sd || !acc) {
    damo_tensor_free(m);
    damo_tensor_free(sd);
    free(acc);
    return damo_error(DAMO_ERR_NOMEM, "standardize_fit: out of memory for %lld features", (long long)f);
  }
  const float *d = damo_tensor_f32(x);
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < f; j++) acc[j] += d[r * f + j];
  float *mp = damo_tensor_f32(m), *sp = damo_tensor_f32(sd);
  for (int64_t j = 0; j < f; j++) {
    acc[j] /= (double)n;
    mp[j] = (float)acc[j];
  }
  double *var = calloc((size_t)f + 1, sizeof *var);
  if (!var) {
    damo_tensor_free(m);
    damo_tensor_free(sd);
    free(acc);
    return damo_error(DAMO_ERR_NOMEM, "standardize_fit: out of memory for %lld features", (long long)f);
  }
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < f; j++) {
      double dv = d[r * f + j] - acc[j];
      var[j] += dv * dv;
    }
  int bad = -1;
  for (int64_t j = 0; j < f; j++) {
    double v = sqrt(var[j] / (double)n); /* population std, as Keras and scikit-learn use */
    if (!isfinite(v) && bad < 0) bad = (int)j;
    sp[j] = (float)(v < STD_FLOOR ? STD_FLOOR : v);
  }
  free(acc);
  free(var);
  if (bad >= 0) {
    damo_tensor_free(m);
    damo_tensor_free(sd);
    return damo_error(DAMO_ERR_NUMERIC, "standardize_fit: feature %d has a non-finite mean or std (NaN or Inf in the "
                      "data?)", bad);
  }
  *mean = m;
  *std = sd;
  return DAMO_OK;
}

damo_status damo_standardize_apply(damo_tensor *x, const damo_tensor *mean, const damo_tensor *std) {
  int64_t n = 0, f = 0;
  damo_status s = as_matrix(x, "standardize_apply", &n, &f);
  if (s) return s;
  const damo_tensor *stats[2] = {mean, std};
  const char *names[2] = {"mean", "std"};
  for (int k = 0; k < 2; k++) {
    const damo_tensor *t = stats[k];
    if (!t || t->dtype != DAMO_F32)
      return damo_error(DAMO_ERR_INVALID_ARG, "standardize_apply: %s must be an f32 tensor", names[k]);
    int same = t->ndim == x->ndim - 1;
    for (int i = 0; same && i < t->ndim; i++) same = t->shape[i] == x->shape[i + 1];
    if (!same) {
      char a[128], b[128];
      return damo_error(DAMO_ERR_SHAPE, "standardize_apply: %s has shape %s but x has features of shape %s", names[k],
                        damo_shape_string(t->ndim, t->shape, a, sizeof a),
                        damo_shape_string(x->ndim - 1, x->shape + 1, b, sizeof b));
    }
  }
  const float *mp = damo_tensor_f32(mean), *sp = damo_tensor_f32(std);
  /* Validate before touching x so a failure leaves it unchanged. */
  for (int64_t j = 0; j < f; j++)
    if (!(sp[j] > 0) || !isfinite(sp[j]) || !isfinite(mp[j]))
      return damo_error(DAMO_ERR_NUMERIC, "standardize_apply: feature %lld has mean %g and std %g (std must be "
                        "finite and positive)", (long long)j, (double)mp[j], (double)sp[j]);
  float *d = damo_tensor_f32(x);
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < f; j++) d[r * f + j] = (d[r * f + j] - mp[j]) / sp[j];
  return DAMO_OK;
}

damo_status damo_check_labels(const damo_tensor *y, int n_classes, const char *what) {
  if (!what) what = "labels";
  if (!y) return damo_error(DAMO_ERR_INVALID_ARG, "%s: NULL tensor", what);
  if (n_classes < 1) return damo_error(DAMO_ERR_INVALID_ARG, "%s: n_classes is %d, expected at least 1", what, n_classes);
  int64_t n = damo_tensor_numel(y);
  for (int64_t i = 0; i < n; i++) {
    int64_t v;
    if (y->dtype == DAMO_I32)
      v = damo_tensor_i32(y)[i];
    else if (y->dtype == DAMO_U8)
      v = ((const uint8_t *)y->data)[i];
    else
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: labels must be i32 (or u8), got %s", what, damo_dtype_name(y->dtype));
    if (v < 0 || v >= n_classes)
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: label %lld at index %lld is outside [0, %d)", what, (long long)v,
                        (long long)i, n_classes);
  }
  return DAMO_OK;
}

damo_status damo_check_finite(const damo_tensor *x, const char *what) {
  if (!what) what = "tensor";
  if (!x) return damo_error(DAMO_ERR_INVALID_ARG, "%s: NULL tensor", what);
  if (x->dtype != DAMO_F32) return DAMO_OK; /* integers are always finite */
  const float *d = damo_tensor_f32(x);
  int64_t n = damo_tensor_numel(x);
  for (int64_t i = 0; i < n; i++) {
    if (isfinite(d[i])) continue;
    /* The flat index plus its position per axis, e.g. "index 31 (1, 3)". */
    int64_t pos[DAMO_MAX_DIMS], rest = i;
    for (int a = x->ndim - 1; a >= 0; a--) {
      pos[a] = x->shape[a] ? rest % x->shape[a] : 0;
      rest = x->shape[a] ? rest / x->shape[a] : 0;
    }
    char where[160];
    damo_shape_string(x->ndim, pos, where, sizeof where);
    return damo_error(DAMO_ERR_NUMERIC, "%s: %s at index %lld%s%s", what, isnan(d[i]) ? "NaN" : "Inf", (long long)i,
                      x->ndim > 1 ? " " : "", x->ndim > 1 ? where : "");
  }
  return DAMO_OK;
}
