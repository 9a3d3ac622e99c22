/* image.c - image files in and out, and the conversions that turn an arbitrary picture into
 * a model's input. Decoding and PNG encoding go through Debian's libstb (stb_image and
 * stb_image_write, compiled once in libstb.so: this file includes the headers only). Images
 * are channels-last F32 tensors (H, W, C) holding 0..255; resizing is our own separable
 * resampler (bilinear, or exact area averaging when an axis shrinks by more than 2x). */
#include "core/core.h"
#include "io/pnm_ascii.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

/* Largest side and pixel count accepted: beyond these a "photo" is a decompression bomb
 * or a corrupt header (65535 is the JPEG limit; 2^27 pixels is 1.5 GiB as RGB floats). */
#define IMAGE_MAX_SIDE 65535
#define IMAGE_MAX_PIXELS ((int64_t)1 << 27)
/* Pixels a file can declare per byte it has (plus a small allowance). No format stb reads
 * packs more: deflate's limit of about 1032:1 on 1-bit PNG rows is ~8256 pixels a byte, a
 * GIF code ~2730, a JPEG at least one bit per 8x8 block's DC term, RLE formats a 128- to
 * 65535-pixel run per packet. A header claiming more is corrupt or hostile, and stb would
 * allocate (and, for a truncated JPEG, decode as zeros) the whole claim. */
#define IMAGE_PIXELS_PER_BYTE 16384
#define IMAGE_PIXELS_ALLOWANCE 65536

/* ITU-R BT.601 luma, as PIL's convert("L") and Keras' load_img use. */
#define LUMA_R 0.299f
#define LUMA_G 0.587f
#define LUMA_B 0.114f

/* ------------------------------------------------------------------ shapes */

/* An image tensor's geometry: (H, W) is one channel, (H, W, C) one image, (N, H, W, C) a
 * batch. U8 and F32 are read. */
typedef struct img_geom {
  int64_t n, h, w, c;
} img_geom;

static damo_status image_geom(const damo_tensor *t, const char *fn, img_geom *g) {
  if (!t) return damo_error(DAMO_ERR_INVALID_ARG, "%s: NULL image", fn);
  if (t->dtype != DAMO_F32 && t->dtype != DAMO_U8)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: expected an f32 or u8 image, got %s", fn, damo_dtype_name(t->dtype));
  g->n = 1;
  g->c = 1;
  if (t->ndim == 2) {
    g->h = t->shape[0];
    g->w = t->shape[1];
  } else if (t->ndim == 3) {
    g->h = t->shape[0];
    g->w = t->shape[1];
    g->c = t->shape[2];
  } else if (t->ndim == 4) {
    g->n = t->shape[0];
    g->h = t->shape[1];
    g->w = t->shape[2];
    g->c = t->shape[3];
  } else {
    char b[128];
    return damo_error(DAMO_ERR_SHAPE, "%s: expected an image (H, W, C), (H, W) or a batch (N, H, W, C), got %s", fn,
                      damo_shape_string(t->ndim, t->shape, b, sizeof b));
  }
  if (g->h < 1 || g->w < 1 || g->c < 1) {
    char b[128];
    return damo_error(DAMO_ERR_SHAPE, "%s: empty image of shape %s", fn, damo_shape_string(t->ndim, t->shape, b, sizeof b));
  }
  return DAMO_OK;
}

/* Pixel value i of t as float (F32 or U8). */
static inline float pix(const damo_tensor *t, int64_t i) {
  return t->dtype == DAMO_F32 ? damo_tensor_f32(t)[i] : (float)((const uint8_t *)t->data)[i];
}

/* A new F32 (H, W, C) image. */
static damo_tensor *image_new(int64_t h, int64_t w, int64_t c) {
  int64_t shape[3] = {h, w, c};
  return damo_tensor_new(DAMO_F32, 3, shape);
}

/* ------------------------------------------------------------------ loading */

/* Converts an 8-bit interleaved image with `have` channels (1 grey, 2 grey+alpha, 3 RGB,
 * 4 RGBA) to F32 with `want` channels (0 = as stored). Alpha is dropped, as PIL does. */
static void convert_u8(const unsigned char *src, int64_t npix, int have, int want, float *dst) {
  if (want == 0 || want == have) {
    for (int64_t i = 0; i < npix * have; i++) dst[i] = (float)src[i];
    return;
  }
  for (int64_t i = 0; i < npix; i++) {
    const unsigned char *p = src + i * have;
    if (have <= 2) { /* grey: replicate (or copy) */
      for (int k = 0; k < want; k++) dst[i * want + k] = (float)p[0];
    } else if (want == 1) {
      dst[i] = LUMA_R * p[0] + LUMA_G * p[1] + LUMA_B * p[2];
    } else { /* want 3 from RGBA */
      for (int k = 0; k < 3; k++) dst[i * 3 + k] = (float)p[k];
    }
  }
}

/* An (h, w, channels or have) F32 image from 8-bit pixels with `have` channels. */
static damo_status image_from_u8(const unsigned char *px, int w, int h, int have, int channels, const char *path,
                                 damo_tensor **out) {
  damo_tensor *t = image_new(h, w, channels ? channels : have);
  if (!t) return damo_error_prefix(DAMO_ERR_NOMEM, "%s: ", path);
  convert_u8(px, (int64_t)w * h, have, channels, damo_tensor_f32(t));
  *out = t;
  return DAMO_OK;
}

damo_status damo_image_load(const char *path, int channels, damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "image_load: NULL output");
  *out = NULL;
  if (!path) return damo_error(DAMO_ERR_INVALID_ARG, "image_load: NULL path");
  if (channels != 0 && channels != 1 && channels != 3)
    return damo_error(DAMO_ERR_INVALID_ARG, "image_load: %s: channels must be 0 (as stored), 1 (grey) or 3 (RGB), got %d",
                      path, channels);
  struct stat st;
  if (stat(path, &st) != 0)
    return damo_error(errno == ENOENT ? DAMO_ERR_NOT_FOUND : DAMO_ERR_IO, "%s: cannot open image: %s", path,
                      strerror(errno));
  if (S_ISDIR(st.st_mode)) return damo_error(DAMO_ERR_IO, "%s: is a directory, not an image file", path);
  if (st.st_size > INT_MAX) /* stb reads from an int-sized buffer */
    return damo_error(DAMO_ERR_FORMAT, "%s: %lld bytes is too large for an image file", path, (long long)st.st_size);
  char *buf = NULL;
  size_t size = 0;
  damo_status s = damo_read_file(path, &buf, &size);
  if (s) return s;
  s = damo_image_decode(buf, size, path, channels, out);
  free(buf);
  return s;
}

damo_status damo_image_decode(const void *data, size_t size, const char *name, int channels, damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "image_decode: NULL output");
  *out = NULL;
  const char *path = name ? name : "image";
  if (!data && size) return damo_error(DAMO_ERR_INVALID_ARG, "image_decode: NULL data");
  if (channels != 0 && channels != 1 && channels != 3)
    return damo_error(DAMO_ERR_INVALID_ARG, "image_decode: %s: channels must be 0 (as stored), 1 (grey) or 3 (RGB), "
                      "got %d", path, channels);
  if (size > INT_MAX) return damo_error(DAMO_ERR_FORMAT, "%s: %zu bytes is too large for an image file", path, size);
  if (size == 0) return damo_error(DAMO_ERR_FORMAT, "%s: empty, not an image", path);
  const stbi_uc *bytes = (const stbi_uc *)data;
  damo_status s;
  int w = 0, h = 0, have = 0;
  if (damo_pnm_is_ascii(bytes, size)) { /* plain P1-P3, which stb_image does not read */
    unsigned char *px = NULL;
    s = damo_pnm_ascii_decode(bytes, size, path, IMAGE_MAX_PIXELS, &px, &w, &h, &have);
    if (s) return s;
    s = image_from_u8(px, w, h, have, channels, path, out);
    free(px);
    return s;
  }
  /* Header first: reject absurd sizes before anything is decoded. */
  if (!stbi_info_from_memory(bytes, (int)size, &w, &h, &have)) {
    const char *why = stbi_failure_reason();
    return damo_error(DAMO_ERR_FORMAT, "%s: not a readable image (PNG, JPEG, BMP, GIF, PNM, TGA, PSD, HDR, PIC): %s",
                      path, why ? why : "unknown reason");
  }
  if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (int64_t)w * h > IMAGE_MAX_PIXELS) {
    return damo_error(DAMO_ERR_FORMAT, "%s: image size %d x %d is outside what damo accepts (sides 1..%d, at most "
                      "%lld pixels)", path, w, h, IMAGE_MAX_SIDE, (long long)IMAGE_MAX_PIXELS);
  }
  if ((int64_t)w * h > (int64_t)IMAGE_PIXELS_PER_BYTE * (int64_t)size + IMAGE_PIXELS_ALLOWANCE) {
    return damo_error(DAMO_ERR_FORMAT, "%s: the header declares %d x %d pixels but a %zu-byte file cannot hold that "
                      "many (at most %lld; truncated or corrupt)", path, w, h, size,
                      (long long)IMAGE_PIXELS_PER_BYTE * (long long)size + IMAGE_PIXELS_ALLOWANCE);
  }
  unsigned char *px = stbi_load_from_memory(bytes, (int)size, &w, &h, &have, 0);
  if (!px) {
    const char *why = stbi_failure_reason();
    return damo_error(DAMO_ERR_FORMAT, "%s: corrupt or unsupported image: %s", path, why ? why : "unknown reason");
  }
  if (have < 1 || have > 4) {
    stbi_image_free(px);
    return damo_error(DAMO_ERR_FORMAT, "%s: image has %d channels, expected 1 to 4", path, have);
  }
  s = image_from_u8(px, w, h, have, channels, path, out);
  stbi_image_free(px);
  return s;
}

/* ------------------------------------------------------------------ resizing */

/* One axis' resampling as taps: output i = sum over k < ntap of wt[i*ntap+k] * in[idx[i*ntap+k]]. */
typedef struct axis_taps {
  int ntap;
  int64_t *idx;
  float *wt;
} axis_taps;

static void taps_free(axis_taps *a) {
  free(a->idx);
  free(a->wt);
}

/* Bilinear with half-pixel centres (as OpenCV, PIL without antialias, TF half_pixel_centers)
 * when the axis grows or shrinks by at most 2x; exact area averaging (OpenCV INTER_AREA)
 * beyond that, so every input pixel counts and thin strokes do not alias away. At exactly
 * 2x both are the mean of pixel pairs. */
static damo_status taps_build(int64_t in, int64_t out, axis_taps *a) {
  double scale = (double)in / (double)out;
  int area = scale > 2.0;
  a->ntap = area ? (int)ceil(scale) + 1 : 2;
  size_t n = (size_t)out * (size_t)a->ntap;
  a->idx = malloc(n * sizeof *a->idx);
  a->wt = malloc(n * sizeof *a->wt);
  if (!a->idx || !a->wt) {
    taps_free(a);
    return damo_error(DAMO_ERR_NOMEM, "image_resize: out of memory for %lld resampling taps", (long long)n);
  }
  for (int64_t i = 0; i < out; i++) {
    int64_t *ix = a->idx + i * a->ntap;
    float *wt = a->wt + i * a->ntap;
    for (int k = 0; k < a->ntap; k++) {
      ix[k] = 0;
      wt[k] = 0;
    }
    if (!area) {
      double src = (i + 0.5) * scale - 0.5;
      if (src < 0) src = 0;
      if (src > (double)(in - 1)) src = (double)(in - 1);
      int64_t j0 = (int64_t)src;
      double t = src - (double)j0;
      ix[0] = j0;
      ix[1] = j0 + 1 < in ? j0 + 1 : in - 1;
      wt[0] = (float)(1.0 - t);
      wt[1] = (float)t;
    } else {
      double lo = i * scale, hi = (i + 1) * scale;
      int64_t j = (int64_t)floor(lo);
      for (int k = 0; k < a->ntap && j < in; k++, j++) {
        double l = lo > (double)j ? lo : (double)j, r = hi < (double)(j + 1) ? hi : (double)(j + 1);
        ix[k] = j;
        wt[k] = r > l ? (float)((r - l) / scale) : 0.0f;
      }
    }
  }
  return DAMO_OK;
}

/* Resamples one (H, W, C) image src (F32 or U8 at element offset off) into dst (OH, OW, C)
 * through tmp (H, OW, C): rows first, then columns (each column pass a vectorisable axpy). */
static void resample(const damo_tensor *src, int64_t off, int64_t h, int64_t w, int64_t c, const axis_taps *ty,
                     const axis_taps *tx, int64_t oh, int64_t ow, float *tmp, float *dst) {
  for (int64_t y = 0; y < h; y++) {
    float *trow = tmp + y * ow * c;
    int64_t rbase = off + y * w * c;
    for (int64_t x = 0; x < ow; x++) {
      const int64_t *ix = tx->idx + x * tx->ntap;
      const float *wt = tx->wt + x * tx->ntap;
      for (int64_t k = 0; k < c; k++) {
        float acc = 0;
        for (int t = 0; t < tx->ntap; t++) acc += wt[t] * pix(src, rbase + ix[t] * c + k);
        trow[x * c + k] = acc;
      }
    }
  }
  int64_t rowlen = ow * c;
  for (int64_t y = 0; y < oh; y++) {
    float *drow = dst + y * rowlen;
    const int64_t *iy = ty->idx + y * ty->ntap;
    const float *wt = ty->wt + y * ty->ntap;
    for (int64_t i = 0; i < rowlen; i++) drow[i] = 0;
    for (int t = 0; t < ty->ntap; t++) {
      if (wt[t] == 0) continue;
      const float *trow = tmp + iy[t] * rowlen;
      float wv = wt[t];
      for (int64_t i = 0; i < rowlen; i++) drow[i] += wv * trow[i];
    }
  }
}

damo_status damo_image_resize(const damo_tensor *img, int out_h, int out_w, damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "image_resize: NULL output");
  *out = NULL;
  img_geom g = {0, 0, 0, 0};
  damo_status s = image_geom(img, "image_resize", &g);
  if (s) return s;
  if (out_h < 1 || out_w < 1 || out_h > IMAGE_MAX_SIDE || out_w > IMAGE_MAX_SIDE ||
      (int64_t)out_h * out_w > IMAGE_MAX_PIXELS)
    return damo_error(DAMO_ERR_INVALID_ARG, "image_resize: output size %d x %d is outside 1..%d per side", out_h, out_w,
                      IMAGE_MAX_SIDE);
  int64_t shape[4];
  int nd = img->ndim;
  for (int i = 0; i < nd; i++) shape[i] = img->shape[i];
  shape[nd == 4 ? 1 : 0] = out_h;
  shape[nd == 4 ? 2 : 1] = out_w;
  damo_tensor *r = damo_tensor_new(DAMO_F32, nd, shape);
  if (!r) return damo_error_prefix(DAMO_ERR_NOMEM, "image_resize: ");
  axis_taps ty = {0}, tx = {0};
  float *tmp = NULL;
  s = taps_build(g.h, out_h, &ty);
  if (!s) s = taps_build(g.w, out_w, &tx);
  if (!s) {
    tmp = malloc((size_t)g.h * (size_t)out_w * (size_t)g.c * sizeof *tmp);
    if (!tmp) s = damo_error(DAMO_ERR_NOMEM, "image_resize: out of memory");
  }
  if (!s)
    for (int64_t b = 0; b < g.n; b++)
      resample(img, b * g.h * g.w * g.c, g.h, g.w, g.c, &ty, &tx, out_h, out_w, tmp,
               damo_tensor_f32(r) + b * (int64_t)out_h * out_w * g.c);
  free(tmp);
  taps_free(&ty);
  taps_free(&tx);
  if (s) {
    damo_tensor_free(r);
    return s;
  }
  *out = r;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ saving */

typedef struct mem_sink {
  unsigned char *data;
  size_t len, cap;
  int failed;
} mem_sink;

static void sink_write(void *ctx, void *data, int size) {
  mem_sink *m = ctx;
  if (m->failed || size <= 0) return;
  if (m->len + (size_t)size > m->cap) {
    size_t cap = m->cap ? m->cap : 4096;
    while (cap < m->len + (size_t)size) cap *= 2;
    unsigned char *p = realloc(m->data, cap);
    if (!p) {
      m->failed = 1;
      return;
    }
    m->data = p;
    m->cap = cap;
  }
  memcpy(m->data + m->len, data, (size_t)size);
  m->len += (size_t)size;
}

damo_status damo_image_save_png(const char *path, const damo_tensor *img) {
  if (!path) return damo_error(DAMO_ERR_INVALID_ARG, "image_save_png: NULL path");
  img_geom g = {0, 0, 0, 0};
  damo_status s = image_geom(img, "image_save_png", &g);
  if (s) return damo_error_prefix(s, "%s: ", path);
  if (img->ndim == 4) return damo_error(DAMO_ERR_SHAPE, "image_save_png: %s: expected one image (H, W, C), got a batch", path);
  if (g.c != 1 && g.c != 3 && g.c != 4)
    return damo_error(DAMO_ERR_SHAPE, "image_save_png: %s: %lld channels; PNG takes 1 (grey), 3 (RGB) or 4 (RGBA)", path,
                      (long long)g.c);
  if (g.h > IMAGE_MAX_SIDE || g.w > IMAGE_MAX_SIDE || g.h * g.w > IMAGE_MAX_PIXELS)
    return damo_error(DAMO_ERR_SHAPE, "image_save_png: %s: %lld x %lld is too large", path, (long long)g.h, (long long)g.w);
  int64_t n = g.h * g.w * g.c;
  unsigned char *px = malloc((size_t)n);
  if (!px) return damo_error(DAMO_ERR_NOMEM, "image_save_png: %s: out of memory", path);
  for (int64_t i = 0; i < n; i++) {
    float v = pix(img, i);
    v = v > 0 ? v : 0; /* also maps NaN to 0 */
    v = v < 255 ? v : 255;
    px[i] = (unsigned char)(v + 0.5f);
  }
  mem_sink m = {0};
  int ok = stbi_write_png_to_func(sink_write, &m, (int)g.w, (int)g.h, (int)g.c, px, (int)(g.w * g.c));
  free(px);
  if (!ok || m.failed || !m.len) {
    free(m.data);
    return damo_error(m.failed ? DAMO_ERR_NOMEM : DAMO_ERR_IO, "image_save_png: %s: PNG encoding failed%s", path,
                      m.failed ? " (out of memory)" : "");
  }
  s = damo_write_file_atomic(path, m.data, m.len);
  free(m.data);
  return s;
}

/* ------------------------------------------------------------------ model input */

/* Converts pixel p (c_in values) to c_out values (1 or 3): grey from luma, RGB by
 * replication; a second (grey+alpha) or fourth (RGBA) channel is dropped. */
static void pixel_convert(const float *p, int64_t c_in, int c_out, float *q) {
  if (c_in >= 3) {
    if (c_out == 1)
      q[0] = LUMA_R * p[0] + LUMA_G * p[1] + LUMA_B * p[2];
    else
      for (int k = 0; k < 3; k++) q[k] = p[k];
  } else {
    for (int k = 0; k < c_out; k++) q[k] = p[0];
  }
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Background colour: per channel, the median of the pixels in the outer ring (a band of
 * ~2% of the shorter side, at least one pixel). The median ignores an object touching the
 * edge as long as most of the border is background. */
static damo_status estimate_background(const float *im, int64_t h, int64_t w, int c, float *bg) {
  int64_t band = (h < w ? h : w) / 50;
  if (band < 1) band = 1;
  int64_t cnt = 0;
  for (int64_t y = 0; y < h; y++)
    for (int64_t x = 0; x < w; x++)
      if (y < band || y >= h - band || x < band || x >= w - band) cnt++;
  float *v = malloc((size_t)cnt * sizeof *v);
  if (!v) return damo_error(DAMO_ERR_NOMEM, "image_to_model_input: out of memory");
  for (int k = 0; k < c; k++) {
    int64_t m = 0;
    for (int64_t y = 0; y < h; y++)
      for (int64_t x = 0; x < w; x++)
        if (y < band || y >= h - band || x < band || x >= w - band) v[m++] = im[(y * w + x) * c + k];
    qsort(v, (size_t)m, sizeof *v, cmp_float);
    bg[k] = m % 2 ? v[m / 2] : 0.5f * (v[m / 2 - 1] + v[m / 2]);
  }
  free(v);
  return DAMO_OK;
}

damo_status damo_image_to_model_input(const damo_tensor *img, int h, int w, int c, int invert_if_light_background,
                                      damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "image_to_model_input: NULL output");
  *out = NULL;
  img_geom g = {0, 0, 0, 0};
  damo_status s = image_geom(img, "image_to_model_input", &g);
  if (s) return s;
  if (img->ndim == 4) return damo_error(DAMO_ERR_SHAPE, "image_to_model_input: expected one image (H, W, C), got a batch");
  if (c != 1 && c != 3) return damo_error(DAMO_ERR_INVALID_ARG, "image_to_model_input: channels must be 1 or 3, got %d", c);
  if (h < 1 || w < 1 || h > IMAGE_MAX_SIDE || w > IMAGE_MAX_SIDE)
    return damo_error(DAMO_ERR_INVALID_ARG, "image_to_model_input: model input size %d x %d is invalid", h, w);
  if (g.c > 4) return damo_error(DAMO_ERR_SHAPE, "image_to_model_input: %lld channels, expected 1 to 4", (long long)g.c);

  /* 1. channels */
  damo_tensor *conv = image_new(g.h, g.w, c);
  if (!conv) return damo_error_prefix(DAMO_ERR_NOMEM, "image_to_model_input: ");
  float *cv = damo_tensor_f32(conv);
  for (int64_t i = 0; i < g.h * g.w; i++) {
    float p[4];
    for (int64_t k = 0; k < g.c; k++) p[k] = pix(img, i * g.c + k);
    pixel_convert(p, g.c, c, cv + i * c);
  }
  /* 2. background, and inversion when it is light */
  float bg[3];
  s = estimate_background(cv, g.h, g.w, c, bg);
  if (s) {
    damo_tensor_free(conv);
    return s;
  }
  float luma = c == 3 ? LUMA_R * bg[0] + LUMA_G * bg[1] + LUMA_B * bg[2] : bg[0];
  if (invert_if_light_background && luma > 127.5f) {
    /* Levels and negation in one: background -> 0, black -> 255 (per channel). */
    for (int64_t i = 0; i < g.h * g.w; i++)
      for (int k = 0; k < c; k++) {
        float b = bg[k] > 1.0f ? bg[k] : 1.0f;
        float v = (b - cv[i * c + k]) * (255.0f / b);
        cv[i * c + k] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    for (int k = 0; k < c; k++) bg[k] = 0;
  }
  /* 3. fit into the box keeping the aspect ratio, centred, padded with the background */
  double scale = fmin((double)h / (double)g.h, (double)w / (double)g.w);
  int fh = (int)lround(g.h * scale), fw = (int)lround(g.w * scale);
  fh = fh < 1 ? 1 : fh > h ? h : fh;
  fw = fw < 1 ? 1 : fw > w ? w : fw;
  damo_tensor *fit = NULL;
  s = damo_image_resize(conv, fh, fw, &fit);
  damo_tensor_free(conv);
  if (s) return s;
  damo_tensor *r = image_new(h, w, c);
  if (!r) {
    damo_tensor_free(fit);
    return damo_error_prefix(DAMO_ERR_NOMEM, "image_to_model_input: ");
  }
  float *rp = damo_tensor_f32(r);
  const float *fp = damo_tensor_f32(fit);
  for (int64_t i = 0; i < (int64_t)h * w; i++)
    for (int k = 0; k < c; k++) rp[i * c + k] = bg[k];
  int oy = (h - fh) / 2, ox = (w - fw) / 2;
  /* Clamped: the resampling weights, rounded to float one by one, can sum to 1 + 1e-7, so
   * interpolating two 255s gave 255.000015 (found by fuzzing); the result is 0..255 as stated. */
  for (int y = 0; y < fh; y++) {
    float *dst = rp + ((int64_t)(y + oy) * w + ox) * c;
    const float *src = fp + (int64_t)y * fw * c;
    for (int64_t i = 0; i < (int64_t)fw * c; i++) dst[i] = src[i] < 0 ? 0 : src[i] > 255 ? 255 : src[i];
  }
  damo_tensor_free(fit);
  *out = r;
  return DAMO_OK;
}
