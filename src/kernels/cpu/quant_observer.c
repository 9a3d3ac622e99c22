/* quant_observer.c - the calibration observer of static int8 (kernels.h's damo_observer):
 * what range of a layer's input its affine uint8 should cover, from the values seen on the
 * calibration examples. Pass 0 records the range; pass 1 (percentile, histogram) counts the
 * values in DAMO_OBSERVER_BINS bins over that range, and the range is then settled as
 *   minmax      the range seen (PyTorch's MinMaxObserver);
 *   percentile  the range between the (100 - p)th and pth percentiles of the histogram, so a
 *               few outliers do not stretch the scale;
 *   histogram   the bins' range that minimises the expected squared error (clipping outside,
 *               rounding noise delta^2/12 inside), searched by moving either end inwards one
 *               bin at a time, as PyTorch's HistogramObserver does. */
#include "kernels/kernels.h"

#include <stdlib.h>

const char *const damo_calibration_names[] = {"minmax", "percentile", "histogram", NULL};

damo_status damo_quantize_options_resolve(damo_quantize_options *o, const char *where) {
  if ((int)o->method < 0 || o->method > DAMO_CALIB_HISTOGRAM)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: unknown calibration method %d", where, (int)o->method);
  if (o->percentile == 0) o->percentile = 99.99;
  if (!(o->percentile > 50 && o->percentile <= 100))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: percentile %g is outside (50, 100]", where, o->percentile);
  if (o->calibration_examples == 0) o->calibration_examples = 2048;
  if (o->batch_size == 0) o->batch_size = 64;
  if (o->calibration_examples < 1 || o->batch_size < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: calibration examples %lld and batch size %d must be positive", where,
                      (long long)o->calibration_examples, o->batch_size);
  return DAMO_OK;
}

void damo_observer_see(damo_observer *o, const float *x, int64_t count) {
  if (!o->hist) {
    for (int64_t i = 0; i < count; i++) {
      o->lo = x[i] < o->lo ? x[i] : o->lo;
      o->hi = x[i] > o->hi ? x[i] : o->hi;
    }
    return;
  }
  const double width = (double)o->hi - (double)o->lo;
  if (!(width > 0)) return;
  for (int64_t i = 0; i < count; i++) {
    int b = (int)(((double)x[i] - o->lo) / width * DAMO_OBSERVER_BINS);
    o->hist[b < 0 ? 0 : b >= DAMO_OBSERVER_BINS ? DAMO_OBSERVER_BINS - 1 : b] += 1.0;
  }
}

int damo_observer_count_bins(damo_observer *o) {
  if (!o->hist) o->hist = calloc(DAMO_OBSERVER_BINS, sizeof *o->hist);
  return o->hist != NULL;
}

void damo_observer_free(damo_observer *o) {
  free(o->hist);
  o->hist = NULL;
}

/* Expected squared error of quantising the histogram to 255 steps over bins [s, e]. */
static double range_error(const double *hist, int s, int e) {
  const double delta = (double)(e - s + 1) / 255.0, noise = delta * delta / 12.0;
  double err = 0;
  for (int b = 0; b < DAMO_OBSERVER_BINS; b++) {
    if (!hist[b]) continue;
    const double c = b + 0.5, d = c < s ? s - c : c > e + 1 ? c - (e + 1) : 0;
    err += hist[b] * (d > 0 ? d * d : noise);
  }
  return err;
}

void damo_observer_range(const damo_observer *o, damo_calibration method, double percentile, float *lo, float *hi) {
  *lo = o->lo, *hi = o->hi;
  if (method == DAMO_CALIB_MINMAX || !o->hist || !(o->hi > o->lo)) return;
  const int bins = DAMO_OBSERVER_BINS;
  const double bin = ((double)o->hi - o->lo) / bins;
  int s = 0, e = bins - 1;
  if (method == DAMO_CALIB_PERCENTILE) {
    double total = 0, below = 0, above = 0;
    for (int b = 0; b < bins; b++) total += o->hist[b];
    const double tail = total * (100.0 - percentile) / 100.0;
    while (s < e && below + o->hist[s] <= tail) below += o->hist[s++];
    while (e > s && above + o->hist[e] <= tail) above += o->hist[e--];
  } else {
    double best = range_error(o->hist, 0, bins - 1);
    int best_s = 0, best_e = bins - 1;
    while (e - s > bins / 8) {
      const double left = range_error(o->hist, s + 1, e), right = range_error(o->hist, s, e - 1);
      if (left <= right) s++;
      else e--;
      const double err = left <= right ? left : right;
      if (err < best) best = err, best_s = s, best_e = e;
    }
    s = best_s, e = best_e;
  }
  *lo = (float)(o->lo + s * bin);
  *hi = (float)(o->lo + (e + 1) * bin);
}
