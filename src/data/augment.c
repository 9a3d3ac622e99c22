/* augment.c - seeded, on-the-fly image augmentation for training batches (N, H, W, C) F32:
 * random translation (a random crop after padding), horizontal flip, small rotation and
 * zoom, all folded into ONE affine resampling per image (one bilinear pass, no double blur),
 * then random erasing and per-channel normalisation. Reproducible: the batch rng gives one
 * 64-bit seed per call, each image draws from its own generator seeded from that and its
 * index, in a fixed order, so the same seed gives the same batch with any thread count. */
#include "core/core.h"

#include <math.h>

#define DEG2RAD 0.017453292519943295

/* Random-erasing defaults (Zhong et al. 2017, torchvision's RandomErasing). */
#define ERASE_AREA_MIN_DEFAULT 0.02f
#define ERASE_AREA_MAX_DEFAULT 0.33f
#define ERASE_ASPECT_MIN_DEFAULT 0.3f
#define ERASE_ASPECT_MAX_DEFAULT 3.3f
#define ERASE_TRIES 10

/* What one image gets, drawn in a fixed order. */
typedef struct img_plan {
  int flip;
  double angle, zoom;
  int shift_x, shift_y;
  int erase, ex, ey, ew, eh;
} img_plan;

static damo_status check_options(const damo_augment_options *o, int h, int w, int c) {
  const char *fn = "augment_batch";
  if (o->max_shift < 0 || o->max_shift > 4096)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: max_shift %d is outside 0..4096", fn, o->max_shift);
  if (!(o->flip_prob >= 0 && o->flip_prob <= 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: flip_prob %g is outside [0, 1]", fn, (double)o->flip_prob);
  if (!(o->max_rotation_deg >= 0 && o->max_rotation_deg <= 180))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: max_rotation_deg %g is outside [0, 180]", fn, (double)o->max_rotation_deg);
  int zoom_off = (o->zoom_min == 0 && o->zoom_max == 0);
  if (!zoom_off && !(o->zoom_min > 0.05f && o->zoom_max >= o->zoom_min && o->zoom_max <= 20))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: zoom range [%g, %g] is invalid (need 0.05 < zoom_min <= zoom_max <= 20, or "
                      "both 0 for none)", fn, (double)o->zoom_min, (double)o->zoom_max);
  if (!(o->erase_prob >= 0 && o->erase_prob <= 1))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: erase_prob %g is outside [0, 1]", fn, (double)o->erase_prob);
  if (o->erase_area_min != 0 || o->erase_area_max != 0)
    if (!(o->erase_area_min > 0 && o->erase_area_max >= o->erase_area_min && o->erase_area_max <= 1))
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: erase area range [%g, %g] is invalid (need 0 < min <= max <= 1)", fn,
                        (double)o->erase_area_min, (double)o->erase_area_max);
  if (o->erase_aspect_min != 0 || o->erase_aspect_max != 0)
    if (!(o->erase_aspect_min > 0 && o->erase_aspect_max >= o->erase_aspect_min && isfinite(o->erase_aspect_max)))
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: erase aspect range [%g, %g] is invalid (need 0 < min <= max)", fn,
                        (double)o->erase_aspect_min, (double)o->erase_aspect_max);
  if (!(o->erase_fill_max >= 0 && isfinite(o->erase_fill_max)))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: erase_fill_max %g must be finite and >= 0", fn, (double)o->erase_fill_max);
  if ((o->mean == NULL) != (o->std == NULL))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: give both mean and std for normalisation, or neither", fn);
  for (int k = 0; o->std && k < c; k++)
    if (!(o->std[k] > 0) || !isfinite(o->std[k]) || !isfinite(o->mean[k]))
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: channel %d has mean %g and std %g (std must be finite and positive)", fn,
                        k, (double)o->mean[k], (double)o->std[k]);
  (void)h;
  (void)w;
  return DAMO_OK;
}

/* Every image draws the same values in the same order whether or not a transform is on,
 * so switching one transform off does not change what the others do. */
static void draw_plan(const damo_augment_options *o, int h, int w, damo_rng *r, img_plan *p) {
  memset(p, 0, sizeof *p);
  p->flip = damo_rng_uniform(r) < o->flip_prob;
  p->angle = (2.0 * damo_rng_uniform(r) - 1.0) * o->max_rotation_deg * DEG2RAD;
  float u = damo_rng_uniform(r);
  p->zoom = (o->zoom_min == 0 && o->zoom_max == 0) ? 1.0 : o->zoom_min + (double)u * (o->zoom_max - o->zoom_min);
  uint32_t span = 2u * (uint32_t)o->max_shift + 1u;
  p->shift_x = (int)damo_rng_below(r, span) - o->max_shift;
  p->shift_y = (int)damo_rng_below(r, span) - o->max_shift;
  if (!(damo_rng_uniform(r) < o->erase_prob)) return;
  float amin = o->erase_area_max > 0 ? o->erase_area_min : ERASE_AREA_MIN_DEFAULT;
  float amax = o->erase_area_max > 0 ? o->erase_area_max : ERASE_AREA_MAX_DEFAULT;
  float rmin = o->erase_aspect_max > 0 ? o->erase_aspect_min : ERASE_ASPECT_MIN_DEFAULT;
  float rmax = o->erase_aspect_max > 0 ? o->erase_aspect_max : ERASE_ASPECT_MAX_DEFAULT;
  for (int t = 0; t < ERASE_TRIES; t++) {
    double area = (amin + (double)damo_rng_uniform(r) * (amax - amin)) * (double)h * (double)w;
    double lr = log(rmin) + (double)damo_rng_uniform(r) * (log(rmax) - log(rmin));
    double aspect = exp(lr); /* height / width */
    int eh = (int)lround(sqrt(area * aspect)), ew = (int)lround(sqrt(area / aspect));
    if (eh < 1 || ew < 1 || eh > h || ew > w) continue;
    p->erase = 1;
    p->eh = eh;
    p->ew = ew;
    p->ey = (int)damo_rng_below(r, (uint32_t)(h - eh + 1));
    p->ex = (int)damo_rng_below(r, (uint32_t)(w - ew + 1));
    return;
  }
}

/* Integer shift plus optional flip: a straight copy, row by row (exact, no resampling).
 * out(y, x) = in(y - sy, fx(x - sx)), fx mirroring when flipped. */
static void shift_flip(const float *src, float *dst, int h, int w, int c, const img_plan *p, int edge) {
  for (int y = 0; y < h; y++) {
    int sy = y - p->shift_y;
    float *drow = dst + (int64_t)y * w * c;
    if (sy < 0 || sy >= h) {
      if (!edge) {
        memset(drow, 0, (size_t)w * c * sizeof *drow);
        continue;
      }
      sy = sy < 0 ? 0 : h - 1;
    }
    const float *srow = src + (int64_t)sy * w * c;
    for (int x = 0; x < w; x++) {
      int sx = x - p->shift_x;
      if (p->flip) sx = w - 1 - sx;
      float *d = drow + (int64_t)x * c;
      if (sx < 0 || sx >= w) {
        if (!edge) {
          for (int k = 0; k < c; k++) d[k] = 0;
          continue;
        }
        sx = sx < 0 ? 0 : w - 1;
      }
      const float *s = srow + (int64_t)sx * c;
      for (int k = 0; k < c; k++) d[k] = s[k];
    }
  }
}

/* The general case: each output pixel maps back through the inverse of
 * translate . rotate . zoom . flip (about the image centre) and is sampled bilinearly;
 * outside the image is 0, or the nearest edge pixel with edge fill. */
static void affine(const float *src, float *dst, int h, int w, int c, const img_plan *p, int edge) {
  double cx = 0.5 * (w - 1), cy = 0.5 * (h - 1);
  double cs = cos(p->angle) / p->zoom, sn = sin(p->angle) / p->zoom;
  double fl = p->flip ? -1.0 : 1.0;
  /* src_x = ax*x + bx*y + cx0, src_y = ay*x + by*y + cy0 */
  double ax = fl * cs, bx = fl * sn, ay = -sn, by = cs;
  double ox = -cx - p->shift_x, oy = -cy - p->shift_y;
  double cx0 = fl * (cs * ox + sn * oy) + cx, cy0 = (-sn * ox + cs * oy) + cy;
  for (int y = 0; y < h; y++) {
    float *drow = dst + (int64_t)y * w * c;
    for (int x = 0; x < w; x++) {
      float fx = (float)(ax * x + bx * y + cx0), fy = (float)(ay * x + by * y + cy0);
      float *d = drow + (int64_t)x * c;
      if (edge) {
        fx = fx < 0 ? 0 : fx > (float)(w - 1) ? (float)(w - 1) : fx;
        fy = fy < 0 ? 0 : fy > (float)(h - 1) ? (float)(h - 1) : fy;
      } else if (!(fx > -1.0f && fx < (float)w && fy > -1.0f && fy < (float)h)) {
        for (int k = 0; k < c; k++) d[k] = 0;
        continue;
      }
      int x0 = (int)floorf(fx), y0 = (int)floorf(fy);
      float tx = fx - (float)x0, ty = fy - (float)y0;
      int x1 = x0 + 1, y1 = y0 + 1;
      if (edge) { /* clamp keeps the last row/column inside */
        if (x1 > w - 1) x1 = w - 1;
        if (y1 > h - 1) y1 = h - 1;
      }
      float w00 = (1 - tx) * (1 - ty), w01 = tx * (1 - ty), w10 = (1 - tx) * ty, w11 = tx * ty;
      int in_x0 = x0 >= 0, in_x1 = x1 < w, in_y0 = y0 >= 0, in_y1 = y1 < h;
      /* Offsets of the four neighbours; a neighbour outside the image gets weight 0 (and
       * a harmless in-range offset) so the channel loop has no branches. */
      int64_t o00 = ((int64_t)(in_y0 ? y0 : 0) * w + (in_x0 ? x0 : 0)) * c;
      int64_t o01 = ((int64_t)(in_y0 ? y0 : 0) * w + (in_x1 ? x1 : 0)) * c;
      int64_t o10 = ((int64_t)(in_y1 ? y1 : 0) * w + (in_x0 ? x0 : 0)) * c;
      int64_t o11 = ((int64_t)(in_y1 ? y1 : 0) * w + (in_x1 ? x1 : 0)) * c;
      if (!(in_y0 && in_x0)) w00 = 0;
      if (!(in_y0 && in_x1)) w01 = 0;
      if (!(in_y1 && in_x0)) w10 = 0;
      if (!(in_y1 && in_x1)) w11 = 0;
      for (int k = 0; k < c; k++) d[k] = w00 * src[o00 + k] + w01 * src[o01 + k] + w10 * src[o10 + k] + w11 * src[o11 + k];
    }
  }
}

/* One image: geometry from src into dst (tmp holds a copy when they are the same memory),
 * then erasing and normalisation in dst. */
static void augment_one(const damo_augment_options *o, const float *src, float *dst, int h, int w, int c,
                        uint64_t seed, float *tmp) {
  damo_rng r;
  damo_rng_seed(&r, seed);
  img_plan p;
  draw_plan(o, h, w, &r, &p);
  size_t npx = (size_t)h * w * c;
  int geometric = p.angle != 0 || p.zoom != 1.0;
  if (geometric || p.flip || p.shift_x || p.shift_y) {
    if (src == dst) {
      memcpy(tmp, src, npx * sizeof *tmp);
      src = tmp;
    }
    if (geometric)
      affine(src, dst, h, w, c, &p, o->edge_fill);
    else
      shift_flip(src, dst, h, w, c, &p, o->edge_fill);
  } else if (src != dst) {
    memcpy(dst, src, npx * sizeof *dst);
  }
  if (p.erase) {
    for (int y = p.ey; y < p.ey + p.eh; y++) {
      float *d = dst + ((int64_t)y * w + p.ex) * c;
      int64_t m = (int64_t)p.ew * c;
      if (o->erase_fill_max > 0)
        for (int64_t i = 0; i < m; i++) d[i] = damo_rng_uniform(&r) * o->erase_fill_max;
      else
        for (int64_t i = 0; i < m; i++) d[i] = 0;
    }
  }
  if (o->mean) {
    float mu[16], inv[16];
    if (c <= 16) {
      for (int k = 0; k < c; k++) {
        mu[k] = o->mean[k];
        inv[k] = 1.0f / o->std[k];
      }
      for (size_t i = 0; i < npx; i += (size_t)c)
        for (int k = 0; k < c; k++) dst[i + k] = (dst[i + k] - mu[k]) * inv[k];
    } else {
      for (size_t i = 0; i < npx; i++) dst[i] = (dst[i] - o->mean[i % c]) / o->std[i % c];
    }
  }
}

static uint64_t image_seed(uint64_t base, int64_t i) { return base + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1); }

damo_status damo_augment_batch(const damo_augment_options *o, const float *in, float *out, int64_t n, int h, int w,
                               int c, damo_rng *rng, float *scratch) {
  if (!o || !in || !out || !rng) return damo_error(DAMO_ERR_INVALID_ARG, "augment_batch: NULL options, batch or rng");
  if (n < 0 || h < 1 || w < 1 || c < 1 || (int64_t)h * w > ((int64_t)1 << 28) || c > 4096)
    return damo_error(DAMO_ERR_SHAPE, "augment_batch: invalid batch shape (%lld, %d, %d, %d)", (long long)n, h, w, c);
  damo_status s = check_options(o, h, w, c);
  if (s) return s;
  size_t npx = (size_t)h * w * c;
  uintptr_t bi = (uintptr_t)in, bo = (uintptr_t)out, bytes = (uintptr_t)((size_t)n * npx * sizeof(float));
  if (bi != bo && bi < bo + bytes && bo < bi + bytes)
    return damo_error(DAMO_ERR_INVALID_ARG, "augment_batch: in and out overlap without being the same buffer");
  /* Two draws per call, whatever n and the options are. */
  uint64_t base = ((uint64_t)damo_rng_u32(rng) << 32) | damo_rng_u32(rng);
  if (n == 0) return DAMO_OK;
  int in_place = in == out;
  if (o->parallel && n > 1) {
    int failed = 0;
#pragma omp parallel num_threads(damo_threads())
    {
      float *tmp = in_place ? malloc(npx * sizeof *tmp) : NULL;
      if (in_place && !tmp) {
#pragma omp atomic write
        failed = 1;
      }
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; i++)
        if (!in_place || tmp) augment_one(o, in + i * npx, out + i * npx, h, w, c, image_seed(base, i), tmp);
      free(tmp);
    }
    if (failed) return damo_error(DAMO_ERR_NOMEM, "augment_batch: out of memory for a per-thread image copy");
    return DAMO_OK;
  }
  float *tmp = scratch, *own = NULL;
  if (in_place && !tmp) {
    own = tmp = damo_alloc(npx * sizeof *tmp);
    if (!tmp) return damo_error_prefix(DAMO_ERR_NOMEM, "augment_batch: ");
  }
  for (int64_t i = 0; i < n; i++) augment_one(o, in + i * npx, out + i * npx, h, w, c, image_seed(base, i), tmp);
  damo_free(own);
  return DAMO_OK;
}
