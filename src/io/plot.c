/* plot.c - pictures of training people actually look at, as PNG files: the loss/accuracy
 * history (two panels, train vs validation) and a confusion-matrix heat map. Everything is
 * drawn here into an RGB float canvas (anti-aliased lines and dots, crisp bitmap text from
 * the 5x9 font below) and written with damo_image_save_png; no plotting library needed. */
#include "io/io.h"

#include <math.h>
#include <stdio.h>

/* ------------------------------------------------------------------ font */

/* ASCII 32..126, 5 columns x 9 rows per glyph: bit 4 is the leftmost column; rows 0..6 hold
 * capitals and digits, rows 7..8 the descenders of g, j, p, q, y and the comma. */
#define GLYPH_W 5
#define GLYPH_H 9
#define GLYPH_ADV 6 /* advance per character (one column of spacing) */
static const uint8_t font5x9[95][GLYPH_H] = {
    {0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00}, /*   */
    {0x04,0x04,0x04,0x04,0x04,0x00,0x04,0x00,0x00}, /* ! */
    {0x0a,0x0a,0x0a,0x00,0x00,0x00,0x00,0x00,0x00}, /* " */
    {0x0a,0x0a,0x1f,0x0a,0x1f,0x0a,0x0a,0x00,0x00}, /* # */
    {0x04,0x0f,0x14,0x0e,0x05,0x1e,0x04,0x00,0x00}, /* $ */
    {0x18,0x19,0x02,0x04,0x08,0x13,0x03,0x00,0x00}, /* % */
    {0x0c,0x12,0x14,0x08,0x15,0x12,0x0d,0x00,0x00}, /* & */
    {0x04,0x04,0x08,0x00,0x00,0x00,0x00,0x00,0x00}, /* ' */
    {0x02,0x04,0x08,0x08,0x08,0x04,0x02,0x00,0x00}, /* ( */
    {0x08,0x04,0x02,0x02,0x02,0x04,0x08,0x00,0x00}, /* ) */
    {0x00,0x04,0x15,0x0e,0x15,0x04,0x00,0x00,0x00}, /* star */
    {0x00,0x04,0x04,0x1f,0x04,0x04,0x00,0x00,0x00}, /* + */
    {0x00,0x00,0x00,0x00,0x00,0x0c,0x04,0x08,0x00}, /* , */
    {0x00,0x00,0x00,0x1f,0x00,0x00,0x00,0x00,0x00}, /* - */
    {0x00,0x00,0x00,0x00,0x00,0x0c,0x0c,0x00,0x00}, /* . */
    {0x00,0x01,0x02,0x04,0x08,0x10,0x00,0x00,0x00}, /* slash */
    {0x0e,0x11,0x13,0x15,0x19,0x11,0x0e,0x00,0x00}, /* 0 */
    {0x04,0x0c,0x04,0x04,0x04,0x04,0x0e,0x00,0x00}, /* 1 */
    {0x0e,0x11,0x01,0x02,0x04,0x08,0x1f,0x00,0x00}, /* 2 */
    {0x1f,0x02,0x04,0x02,0x01,0x11,0x0e,0x00,0x00}, /* 3 */
    {0x02,0x06,0x0a,0x12,0x1f,0x02,0x02,0x00,0x00}, /* 4 */
    {0x1f,0x10,0x1e,0x01,0x01,0x11,0x0e,0x00,0x00}, /* 5 */
    {0x06,0x08,0x10,0x1e,0x11,0x11,0x0e,0x00,0x00}, /* 6 */
    {0x1f,0x01,0x02,0x04,0x08,0x08,0x08,0x00,0x00}, /* 7 */
    {0x0e,0x11,0x11,0x0e,0x11,0x11,0x0e,0x00,0x00}, /* 8 */
    {0x0e,0x11,0x11,0x0f,0x01,0x02,0x0c,0x00,0x00}, /* 9 */
    {0x00,0x0c,0x0c,0x00,0x0c,0x0c,0x00,0x00,0x00}, /* : */
    {0x00,0x0c,0x0c,0x00,0x0c,0x04,0x08,0x00,0x00}, /* ; */
    {0x02,0x04,0x08,0x10,0x08,0x04,0x02,0x00,0x00}, /* < */
    {0x00,0x00,0x1f,0x00,0x1f,0x00,0x00,0x00,0x00}, /* = */
    {0x08,0x04,0x02,0x01,0x02,0x04,0x08,0x00,0x00}, /* > */
    {0x0e,0x11,0x01,0x02,0x04,0x00,0x04,0x00,0x00}, /* ? */
    {0x0e,0x11,0x01,0x0d,0x15,0x15,0x0e,0x00,0x00}, /* @ */
    {0x0e,0x11,0x11,0x1f,0x11,0x11,0x11,0x00,0x00}, /* A */
    {0x1e,0x11,0x11,0x1e,0x11,0x11,0x1e,0x00,0x00}, /* B */
    {0x0e,0x11,0x10,0x10,0x10,0x11,0x0e,0x00,0x00}, /* C */
    {0x1c,0x12,0x11,0x11,0x11,0x12,0x1c,0x00,0x00}, /* D */
    {0x1f,0x10,0x10,0x1e,0x10,0x10,0x1f,0x00,0x00}, /* E */
    {0x1f,0x10,0x10,0x1e,0x10,0x10,0x10,0x00,0x00}, /* F */
    {0x0e,0x11,0x10,0x17,0x11,0x11,0x0f,0x00,0x00}, /* G */
    {0x11,0x11,0x11,0x1f,0x11,0x11,0x11,0x00,0x00}, /* H */
    {0x0e,0x04,0x04,0x04,0x04,0x04,0x0e,0x00,0x00}, /* I */
    {0x07,0x02,0x02,0x02,0x02,0x12,0x0c,0x00,0x00}, /* J */
    {0x11,0x12,0x14,0x18,0x14,0x12,0x11,0x00,0x00}, /* K */
    {0x10,0x10,0x10,0x10,0x10,0x10,0x1f,0x00,0x00}, /* L */
    {0x11,0x1b,0x15,0x15,0x11,0x11,0x11,0x00,0x00}, /* M */
    {0x11,0x11,0x19,0x15,0x13,0x11,0x11,0x00,0x00}, /* N */
    {0x0e,0x11,0x11,0x11,0x11,0x11,0x0e,0x00,0x00}, /* O */
    {0x1e,0x11,0x11,0x1e,0x10,0x10,0x10,0x00,0x00}, /* P */
    {0x0e,0x11,0x11,0x11,0x15,0x12,0x0d,0x00,0x00}, /* Q */
    {0x1e,0x11,0x11,0x1e,0x14,0x12,0x11,0x00,0x00}, /* R */
    {0x0f,0x10,0x10,0x0e,0x01,0x01,0x1e,0x00,0x00}, /* S */
    {0x1f,0x04,0x04,0x04,0x04,0x04,0x04,0x00,0x00}, /* T */
    {0x11,0x11,0x11,0x11,0x11,0x11,0x0e,0x00,0x00}, /* U */
    {0x11,0x11,0x11,0x11,0x11,0x0a,0x04,0x00,0x00}, /* V */
    {0x11,0x11,0x11,0x15,0x15,0x15,0x0a,0x00,0x00}, /* W */
    {0x11,0x11,0x0a,0x04,0x0a,0x11,0x11,0x00,0x00}, /* X */
    {0x11,0x11,0x11,0x0a,0x04,0x04,0x04,0x00,0x00}, /* Y */
    {0x1f,0x01,0x02,0x04,0x08,0x10,0x1f,0x00,0x00}, /* Z */
    {0x0e,0x08,0x08,0x08,0x08,0x08,0x0e,0x00,0x00}, /* [ */
    {0x00,0x10,0x08,0x04,0x02,0x01,0x00,0x00,0x00}, /* backslash */
    {0x0e,0x02,0x02,0x02,0x02,0x02,0x0e,0x00,0x00}, /* ] */
    {0x04,0x0a,0x11,0x00,0x00,0x00,0x00,0x00,0x00}, /* ^ */
    {0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x1f}, /* _ */
    {0x08,0x04,0x02,0x00,0x00,0x00,0x00,0x00,0x00}, /* ` */
    {0x00,0x00,0x0e,0x01,0x0f,0x11,0x0f,0x00,0x00}, /* a */
    {0x10,0x10,0x16,0x19,0x11,0x11,0x1e,0x00,0x00}, /* b */
    {0x00,0x00,0x0e,0x10,0x10,0x11,0x0e,0x00,0x00}, /* c */
    {0x01,0x01,0x0d,0x13,0x11,0x11,0x0f,0x00,0x00}, /* d */
    {0x00,0x00,0x0e,0x11,0x1f,0x10,0x0e,0x00,0x00}, /* e */
    {0x06,0x09,0x08,0x1c,0x08,0x08,0x08,0x00,0x00}, /* f */
    {0x00,0x00,0x0f,0x11,0x11,0x11,0x0f,0x01,0x0e}, /* g */
    {0x10,0x10,0x16,0x19,0x11,0x11,0x11,0x00,0x00}, /* h */
    {0x04,0x00,0x0c,0x04,0x04,0x04,0x0e,0x00,0x00}, /* i */
    {0x02,0x00,0x06,0x02,0x02,0x02,0x02,0x12,0x0c}, /* j */
    {0x10,0x10,0x12,0x14,0x18,0x14,0x12,0x00,0x00}, /* k */
    {0x0c,0x04,0x04,0x04,0x04,0x04,0x0e,0x00,0x00}, /* l */
    {0x00,0x00,0x1a,0x15,0x15,0x15,0x15,0x00,0x00}, /* m */
    {0x00,0x00,0x16,0x19,0x11,0x11,0x11,0x00,0x00}, /* n */
    {0x00,0x00,0x0e,0x11,0x11,0x11,0x0e,0x00,0x00}, /* o */
    {0x00,0x00,0x1e,0x11,0x11,0x11,0x1e,0x10,0x10}, /* p */
    {0x00,0x00,0x0f,0x11,0x11,0x11,0x0f,0x01,0x01}, /* q */
    {0x00,0x00,0x16,0x19,0x10,0x10,0x10,0x00,0x00}, /* r */
    {0x00,0x00,0x0f,0x10,0x0e,0x01,0x1e,0x00,0x00}, /* s */
    {0x08,0x08,0x1c,0x08,0x08,0x09,0x06,0x00,0x00}, /* t */
    {0x00,0x00,0x11,0x11,0x11,0x13,0x0d,0x00,0x00}, /* u */
    {0x00,0x00,0x11,0x11,0x11,0x0a,0x04,0x00,0x00}, /* v */
    {0x00,0x00,0x11,0x11,0x15,0x15,0x0a,0x00,0x00}, /* w */
    {0x00,0x00,0x11,0x0a,0x04,0x0a,0x11,0x00,0x00}, /* x */
    {0x00,0x00,0x11,0x11,0x11,0x11,0x0f,0x01,0x0e}, /* y */
    {0x00,0x00,0x1f,0x02,0x04,0x08,0x1f,0x00,0x00}, /* z */
    {0x03,0x04,0x04,0x08,0x04,0x04,0x03,0x00,0x00}, /* { */
    {0x04,0x04,0x04,0x04,0x04,0x04,0x04,0x00,0x00}, /* | */
    {0x18,0x04,0x04,0x02,0x04,0x04,0x18,0x00,0x00}, /* } */
    {0x00,0x00,0x08,0x15,0x02,0x00,0x00,0x00,0x00}, /* ~ */
};

/* ------------------------------------------------------------------ canvas */

typedef struct rgb {
  float r, g, b;
} rgb;

static const rgb WHITE = {255, 255, 255}, INK = {40, 40, 48}, SUBTLE = {105, 105, 115}, GRID = {232, 232, 238},
                 FRAME = {175, 175, 185};
static const rgb SERIES[2] = {{31, 119, 180}, {235, 115, 20}}; /* train blue, validation orange */

typedef struct canvas {
  int w, h;
  damo_tensor *img; /* (h, w, 3) F32 */
  float *px;
} canvas;

static damo_status canvas_new(canvas *cv, int w, int h) {
  int64_t shape[3] = {h, w, 3};
  cv->w = w;
  cv->h = h;
  cv->img = damo_tensor_new(DAMO_F32, 3, shape);
  if (!cv->img) return damo_error_prefix(DAMO_ERR_NOMEM, "plot: ");
  cv->px = damo_tensor_f32(cv->img);
  for (int64_t i = 0; i < (int64_t)w * h * 3; i++) cv->px[i] = 255;
  return DAMO_OK;
}

/* Mixes colour c into pixel (x, y) with opacity a. */
static inline void blend(canvas *cv, int x, int y, rgb c, float a) {
  if (x < 0 || y < 0 || x >= cv->w || y >= cv->h || !(a > 0)) return;
  if (a > 1) a = 1;
  float *p = cv->px + ((int64_t)y * cv->w + x) * 3;
  p[0] += a * (c.r - p[0]);
  p[1] += a * (c.g - p[1]);
  p[2] += a * (c.b - p[2]);
}

/* Fills [x0, x1) x [y0, y1). */
static void fill_rect(canvas *cv, int x0, int y0, int x1, int y1, rgb c) {
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++) blend(cv, x, y, c, 1);
}

static void rect_outline(canvas *cv, int x0, int y0, int x1, int y1, rgb c) {
  fill_rect(cv, x0, y0, x1, y0 + 1, c);
  fill_rect(cv, x0, y1 - 1, x1, y1, c);
  fill_rect(cv, x0, y0, x0 + 1, y1, c);
  fill_rect(cv, x1 - 1, y0, x1, y1, c);
}

/* An anti-aliased filled disc centred at (cx, cy) (pixel centres are at +0.5). */
static void disc(canvas *cv, float cx, float cy, float r, rgb c) {
  for (int y = (int)floorf(cy - r - 1); y <= (int)ceilf(cy + r + 1); y++)
    for (int x = (int)floorf(cx - r - 1); x <= (int)ceilf(cx + r + 1); x++) {
      float dx = x + 0.5f - cx, dy = y + 0.5f - cy;
      blend(cv, x, y, c, r + 0.5f - sqrtf(dx * dx + dy * dy));
    }
}

/* An anti-aliased polyline of width lw through (xs[i], ys[i]); a NaN point breaks it.
 * Coverage is accumulated as a per-pixel maximum first so joints are not painted twice.
 * Drawing is clipped to the box [bx0, bx1) x [by0, by1). */
static damo_status polyline(canvas *cv, const float *xs, const float *ys, int n, float lw, rgb c, int bx0, int by0,
                            int bx1, int by1) {
  int bw = bx1 - bx0, bh = by1 - by0;
  if (bw <= 0 || bh <= 0) return DAMO_OK;
  float *cov = calloc((size_t)bw * bh, sizeof *cov);
  if (!cov) return damo_error(DAMO_ERR_NOMEM, "plot: out of memory");
  float hw = 0.5f * lw;
  for (int i = 0; i + 1 < n; i++) {
    float x0 = xs[i], y0 = ys[i], x1 = xs[i + 1], y1 = ys[i + 1];
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1)) continue;
    float dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    int ya = (int)floorf(fminf(y0, y1) - hw - 1), yb = (int)ceilf(fmaxf(y0, y1) + hw + 1);
    int xa = (int)floorf(fminf(x0, x1) - hw - 1), xb = (int)ceilf(fmaxf(x0, x1) + hw + 1);
    if (ya < by0) ya = by0;
    if (yb > by1 - 1) yb = by1 - 1;
    if (xa < bx0) xa = bx0;
    if (xb > bx1 - 1) xb = bx1 - 1;
    for (int y = ya; y <= yb; y++)
      for (int x = xa; x <= xb; x++) {
        float px = x + 0.5f - x0, py = y + 0.5f - y0;
        float t = len2 > 0 ? (px * dx + py * dy) / len2 : 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        float ex = px - t * dx, ey = py - t * dy;
        float a = hw + 0.5f - sqrtf(ex * ex + ey * ey);
        float *m = cov + (int64_t)(y - by0) * bw + (x - bx0);
        if (a > *m) *m = a > 1 ? 1 : a;
      }
  }
  for (int y = 0; y < bh; y++)
    for (int x = 0; x < bw; x++) blend(cv, bx0 + x, by0 + y, c, cov[(int64_t)y * bw + x]);
  free(cov);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ text */

static int text_width(const char *s, int scale) {
  int n = (int)strlen(s);
  return n ? (n * GLYPH_ADV - 1) * scale : 0;
}

/* Text with its top-left corner at (x, y), each font pixel a scale x scale block. rotated:
 * turned 90 degrees counter-clockwise (reads bottom to top), (x, y) then being the
 * bottom-left corner of the turned text. Characters outside ASCII print as '?'. */
static void draw_text(canvas *cv, int x, int y, const char *s, int scale, rgb c, int rotated) {
  for (int i = 0; s[i]; i++) {
    unsigned ch = (unsigned char)s[i];
    if (ch < 32 || ch > 126) ch = '?';
    const uint8_t *g = font5x9[ch - 32];
    for (int gy = 0; gy < GLYPH_H; gy++)
      for (int gx = 0; gx < GLYPH_W; gx++) {
        if (!(g[gy] & (0x10 >> gx))) continue;
        int u = (i * GLYPH_ADV + gx) * scale, v = gy * scale;
        if (!rotated)
          fill_rect(cv, x + u, y + v, x + u + scale, y + v + scale, c);
        else
          fill_rect(cv, x + v, y - u - scale + 1, x + v + scale, y - u + 1, c);
      }
  }
}

/* Horizontal alignment: 0 left, 1 centre, 2 right of x. */
static void text_at(canvas *cv, int x, int y, const char *s, int scale, rgb c, int align) {
  int w = text_width(s, scale);
  draw_text(cv, align == 0 ? x : align == 1 ? x - w / 2 : x - w, y, s, scale, c, 0);
}

damo_status damo_image_draw_text(damo_tensor *img, int x, int y, const char *text, int scale, const float colour[3]) {
  if (!img || !text || !colour || img->dtype != DAMO_F32 || img->ndim != 3 || img->shape[2] != 3 || scale < 1)
    return damo_error(DAMO_ERR_INVALID_ARG, "image_draw_text: needs an (H, W, 3) f32 picture, text, a colour and scale >= 1");
  canvas cv = {.w = (int)img->shape[1], .h = (int)img->shape[0], .img = img, .px = damo_tensor_f32(img)};
  draw_text(&cv, x, y, text, scale, (rgb){colour[0], colour[1], colour[2]}, 0);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ axes */

/* Ticks over [lo, hi]: a 1-2-5 step giving at most max_ticks, labels with just enough
 * decimals for that step. */
typedef struct ticks {
  double first, step;
  int count, decimals;
} ticks;

static ticks nice_ticks(double lo, double hi, int max_ticks) {
  ticks t;
  double span = hi - lo;
  if (!(span > 0)) span = fabs(hi) > 0 ? fabs(hi) : 1;
  double raw = span / (max_ticks > 1 ? max_ticks - 1 : 1), mag = pow(10, floor(log10(raw)));
  double m = raw / mag;
  t.step = (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * mag;
  t.first = ceil(lo / t.step - 1e-9) * t.step;
  t.count = (int)floor((hi - t.first) / t.step + 1e-9) + 1;
  if (t.count < 1) t.count = 1;
  t.decimals = t.step >= 1 ? 0 : (int)ceil(-log10(t.step) - 1e-9);
  if (fabs(t.step / pow(10, -t.decimals) - round(t.step / pow(10, -t.decimals))) > 1e-6) t.decimals++; /* 0.25 */
  return t;
}

int damo_plot_epoch_ticks(int n_epochs, double *out, int cap) {
  double lo = 1, hi = n_epochs > 1 ? n_epochs : 1;
  ticks t = nice_ticks(lo, hi, 10);
  /* Epochs are whole: a step under 1 becomes 1, and 2.5 (the 1-2-2.5-5 ladder's only
   * fraction, which "%.0f" printed as "2" under a tick at 2.5) becomes 2, or 5. */
  double step = t.step < 1 ? 1 : floor(t.step);
  if ((hi - lo) / step + 1 > 10.5) step = 2 * t.step; /* 2.5 -> 5 when 2 gives too many */
  int count = 0;
  for (double v = ceil(lo / step) * step; v <= hi + 1e-9 && count < cap; v += step)
    if (v >= 1) out[count++] = v; /* epochs count from 1 */
  return count;
}

static void tick_label(char *buf, size_t cap, double v, int decimals) {
  if (fabs(v) < 1e-12) v = 0; /* no "-0.0" */
  snprintf(buf, cap, "%.*f", decimals, v);
}

/* One panel of the history plot: a box with a y range, the x range of epochs. */
typedef struct panel {
  int x0, y0, x1, y1; /* plot area */
  double xlo, xhi, ylo, yhi;
} panel;

static float panel_x(const panel *p, double v) { return (float)(p->x0 + (v - p->xlo) / (p->xhi - p->xlo) * (p->x1 - p->x0)); }
static float panel_y(const panel *p, double v) { return (float)(p->y1 - (v - p->ylo) / (p->yhi - p->ylo) * (p->y1 - p->y0)); }

/* Finite min/max over up to two series (NULL allowed); returns 0 when nothing is finite. */
static int series_range(const float *a, const float *b, int n, double *lo, double *hi) {
  int any = 0;
  const float *s[2] = {a, b};
  for (int k = 0; k < 2; k++)
    for (int i = 0; s[k] && i < n; i++)
      if (isfinite(s[k][i])) {
        if (!any || s[k][i] < *lo) *lo = s[k][i];
        if (!any || s[k][i] > *hi) *hi = s[k][i];
        any = 1;
      }
  return any;
}

/* Draws one history panel at [left, right) x [top, bottom) (including its labels). */
/* at: the x of each point (NULL: epochs 1..n), x_label the axis's name. */
static damo_status draw_history_panel(canvas *cv, int left, int top, int right, int bottom, const char *name,
                                      int n, const float *at, const char *x_label, const float *train,
                                      const float *val, int is_accuracy) {
  double lo = 0, hi = 1;
  series_range(train, val, n, &lo, &hi);
  double pad = (hi - lo) * 0.08;
  if (!(pad > 0)) pad = fabs(hi) > 0 ? fabs(hi) * 0.1 : 0.5;
  int nonneg = lo >= 0; /* losses and accuracies: keep the axis from dipping below 0 */
  lo -= pad;
  hi += pad;
  if (nonneg && lo < 0) lo = 0;
  if (is_accuracy && hi > 1 && lo <= 1) hi = hi - pad < 1 ? 1 : hi;
  ticks yt = nice_ticks(lo, hi, 6);
  /* Snap the range outwards to whole ticks so the top and bottom lines are labelled. */
  lo = floor(lo / yt.step + 1e-9) * yt.step;
  hi = ceil(hi / yt.step - 1e-9) * yt.step;
  yt = nice_ticks(lo, hi, 7);
  char buf[48];
  int lab_w = 0;
  for (int i = 0; i < yt.count; i++) {
    tick_label(buf, sizeof buf, yt.first + i * yt.step, yt.decimals);
    int tw = text_width(buf, 2);
    if (tw > lab_w) lab_w = tw;
  }
  panel p = {left + lab_w + 14, top + 30, right - 12, bottom - 52, 1, n > 1 ? n : 2, lo, hi};
  if (at) p.xlo = at[0], p.xhi = at[n - 1];
  if (p.xhi <= p.xlo) { /* one point (or one x): centred */
    p.xhi = p.xlo + 0.5;
    p.xlo -= 0.5;
  }
  text_at(cv, (p.x0 + p.x1) / 2, top, name, 2, INK, 1);
  fill_rect(cv, p.x0, p.y0, p.x1, p.y1, WHITE);
  for (int i = 0; i < yt.count; i++) {
    double v = yt.first + i * yt.step;
    int y = (int)lroundf(panel_y(&p, v));
    if (y < p.y0 - 1 || y > p.y1) continue;
    fill_rect(cv, p.x0, y, p.x1, y + 1, GRID);
    fill_rect(cv, p.x0 - 5, y, p.x0, y + 1, FRAME);
    tick_label(buf, sizeof buf, v, yt.decimals);
    text_at(cv, p.x0 - 9, y - 8, buf, 2, SUBTLE, 2);
  }
  double xticks[16];
  int n_xticks = 0;
  if (!at) {
    n_xticks = damo_plot_epoch_ticks(n, xticks, 16);
  } else { /* steps: whole numbers on a 1-2-5 ladder over the range */
    ticks xt = nice_ticks(p.xlo, p.xhi, 8);
    const double step = xt.step < 1 ? 1 : xt.step;
    for (double v = ceil(p.xlo / step) * step; v <= p.xhi + 1e-9 && n_xticks < 16; v += step) xticks[n_xticks++] = v;
  }
  for (int i = 0; i < n_xticks; i++) {
    double v = xticks[i];
    int x = (int)lroundf(panel_x(&p, v));
    fill_rect(cv, x, p.y0, x + 1, p.y1, GRID);
    fill_rect(cv, x, p.y1, x + 1, p.y1 + 5, FRAME);
    tick_label(buf, sizeof buf, v, 0);
    text_at(cv, x, p.y1 + 10, buf, 2, SUBTLE, 1);
  }
  text_at(cv, (p.x0 + p.x1) / 2, p.y1 + 32, x_label, 2, SUBTLE, 1);
  rect_outline(cv, p.x0 - 1, p.y0 - 1, p.x1 + 1, p.y1 + 1, FRAME);
  /* Lines, then dots on each epoch when there are few enough to tell apart. */
  float *xs = malloc((size_t)n * 2 * sizeof *xs);
  if (!xs) return damo_error(DAMO_ERR_NOMEM, "plot: out of memory");
  float *ys = xs + n;
  const float *series[2] = {train, val};
  float dot = (p.x1 - p.x0) / (float)(n > 1 ? n - 1 : 1) >= 9 ? 3.2f : 0;
  damo_status s = DAMO_OK;
  for (int k = 0; k < 2 && !s; k++) {
    if (!series[k]) continue;
    for (int i = 0; i < n; i++) {
      xs[i] = panel_x(&p, at ? at[i] : i + 1);
      ys[i] = isfinite(series[k][i]) ? panel_y(&p, series[k][i]) : NAN;
    }
    s = polyline(cv, xs, ys, n, 2.6f, SERIES[k], p.x0, p.y0, p.x1, p.y1);
    for (int i = 0; i < n && !s; i++) {
      int alone = (i == 0 || !isfinite(ys[i - 1])) && (i == n - 1 || !isfinite(ys[i + 1]));
      if (isfinite(ys[i]) && (dot > 0 || alone)) disc(cv, xs[i], ys[i], dot > 0 ? dot : 3.2f, SERIES[k]);
    }
  }
  free(xs);
  return s;
}

static int has_finite(const float *a, int n) {
  for (int i = 0; a && i < n; i++)
    if (isfinite(a[i])) return 1;
  return 0;
}

damo_status damo_plot_history_png(const char *path, const char *title, int n_epochs, const float *train_loss,
                                  const float *val_loss, const float *train_acc, const float *val_acc) {
  return damo_plot_history_png_at(path, title, n_epochs, NULL, "epoch", train_loss, val_loss, train_acc, val_acc);
}

damo_status damo_plot_history_png_at(const char *path, const char *title, int n_epochs, const float *at,
                                     const char *x_label, const float *train_loss, const float *val_loss,
                                     const float *train_acc, const float *val_acc) {
  static const char *const names[2] = {"train", "validation"};
  return damo_plot_series_png(path, title, n_epochs, at, x_label, names, train_loss, val_loss, train_acc, val_acc);
}

damo_status damo_plot_series_png(const char *path, const char *title, int n_epochs, const float *at,
                                 const char *x_label, const char *const names[2], const float *train_loss,
                                 const float *val_loss, const float *train_acc, const float *val_acc) {
  const char *const panels[2] = {"loss", "accuracy"};
  return damo_plot_panels_png(path, title, n_epochs, at, x_label, names, panels, train_loss, val_loss, train_acc,
                              val_acc);
}

damo_status damo_plot_panels_png(const char *path, const char *title, int n_epochs, const float *at,
                                 const char *x_label, const char *const names[2], const char *const panel_titles[2],
                                 const float *train_loss, const float *val_loss, const float *train_acc,
                                 const float *val_acc) {
  if (!path) return damo_error(DAMO_ERR_INVALID_ARG, "plot_history_png: NULL path");
  for (int i = 1; at && i < n_epochs; i++)
    if (!(at[i] > at[i - 1]))
      return damo_error(DAMO_ERR_INVALID_ARG, "plot_history_png: %s: x values must increase (%g after %g)", path,
                        (double)at[i], (double)at[i - 1]);
  if (!x_label) x_label = at ? "step" : "epoch";
  if (n_epochs < 1 || n_epochs > 1000000)
    return damo_error(DAMO_ERR_INVALID_ARG, "plot_history_png: %s: n_epochs is %d, expected at least 1", path, n_epochs);
  int have_loss = has_finite(train_loss, n_epochs) || has_finite(val_loss, n_epochs);
  int have_acc = has_finite(train_acc, n_epochs) || has_finite(val_acc, n_epochs);
  if (!have_loss && !have_acc)
    return damo_error(DAMO_ERR_INVALID_ARG, "plot_history_png: %s: no finite loss or accuracy value to plot", path);
  int have_val = has_finite(val_loss, n_epochs) || has_finite(val_acc, n_epochs);
  int have_train = has_finite(train_loss, n_epochs) || has_finite(train_acc, n_epochs);
  int panels = have_loss + have_acc;
  canvas cv;
  damo_status s = canvas_new(&cv, panels == 2 ? 1100 : 640, 480);
  if (s) return s;
  fill_rect(&cv, 0, 0, cv.w, cv.h, (rgb){250, 250, 252});
  text_at(&cv, cv.w / 2, 14, title && title[0] ? title : "training history", 3, INK, 1);
  /* Legend: one row under the title. */
  int show[2] = {have_train, have_val}, total = 0;
  for (int k = 0; k < 2; k++)
    if (show[k]) total += 34 + text_width(names[k], 2) + 28;
  int lx = (cv.w - total + 28) / 2;
  for (int k = 0; k < 2; k++) {
    if (!show[k]) continue;
    float xs[2] = {(float)lx, (float)lx + 26}, ys[2] = {56.5f, 56.5f};
    s = polyline(&cv, xs, ys, 2, 2.6f, SERIES[k], 0, 0, cv.w, cv.h);
    if (s) break;
    disc(&cv, lx + 13.0f, 56.5f, 3.2f, SERIES[k]);
    draw_text(&cv, lx + 34, 49, names[k], 2, INK, 0);
    lx += 34 + text_width(names[k], 2) + 28;
  }
  int col = 0, pw = cv.w / panels;
  if (!s && have_loss) {
    s = draw_history_panel(&cv, 10, 84, pw - 10, cv.h, panel_titles[0], n_epochs, at, x_label, train_loss, val_loss, 0);
    col++;
  }
  if (!s && have_acc)
    s = draw_history_panel(&cv, col * pw + 10, 84, (col + 1) * pw - 10, cv.h, panel_titles[1], n_epochs, at, x_label,
                           train_acc, val_acc, 1);
  if (!s) s = damo_image_save_png(path, cv.img);
  damo_tensor_free(cv.img);
  return s;
}

/* ------------------------------------------------------------------ confusion matrix */

/* White to deep blue, through light and mid blues (a sequential map like ColorBrewer's). */
static rgb heat(double f) {
  static const rgb stops[5] = {{247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
  f = f < 0 ? 0 : f > 1 ? 1 : f;
  double t = f * 4;
  int i = t >= 4 ? 3 : (int)t;
  float u = (float)(t - i);
  rgb a = stops[i], b = stops[i + 1];
  return (rgb){a.r + u * (b.r - a.r), a.g + u * (b.g - a.g), a.b + u * (b.b - a.b)};
}

#define NAME_MAX_CHARS 18

/* Class i's label (truncated copy into buf). */
static const char *class_label(const char *const *names, int i, char *buf, size_t cap) {
  if (names && names[i])
    snprintf(buf, cap, "%.*s", NAME_MAX_CHARS, names[i]);
  else
    snprintf(buf, cap, "%d", i);
  return buf;
}

damo_status damo_plot_confusion_png(const char *path, int n_classes, const int64_t *counts,
                                    const char *const *class_names) {
  if (!path || !counts) return damo_error(DAMO_ERR_INVALID_ARG, "plot_confusion_png: NULL path or counts");
  int n = n_classes;
  if (n < 1 || n > 200)
    return damo_error(DAMO_ERR_INVALID_ARG, "plot_confusion_png: %s: n_classes is %d, expected 1..200", path, n);
  int64_t total = 0, correct = 0, maxc = 0;
  for (int i = 0; i < n * n; i++) {
    if (counts[i] < 0)
      return damo_error(DAMO_ERR_INVALID_ARG, "plot_confusion_png: %s: negative count %lld at row %d, column %d", path,
                        (long long)counts[i], i / n, i % n);
    total += counts[i];
    if (counts[i] > maxc) maxc = counts[i];
  }
  for (int i = 0; i < n; i++) correct += counts[i * n + i];
  /* Sizes: cells fill ~600 px; names and counts shrink to one font pixel when crowded. */
  int cs = 600 / n;
  cs = cs < 12 ? 12 : cs > 64 ? 64 : cs;
  int ns = n <= 24 ? 2 : 1;
  char buf[64], lab[64];
  int name_w = 0;
  for (int i = 0; i < n; i++) {
    int tw = text_width(class_label(class_names, i, lab, sizeof lab), ns);
    if (tw > name_w) name_w = tw;
  }
  snprintf(buf, sizeof buf, "%lld", (long long)maxc);
  int cnt_scale = text_width(buf, 2) <= cs - 8 && cs >= 26 ? 2 : text_width(buf, 1) <= cs - 4 ? 1 : 0;
  /* Column names fit across their cells, or are turned to read upwards. */
  int cols_flat = name_w <= cs - 4, below = cols_flat ? GLYPH_H * ns : name_w;
  const char *acc_head = "per-class accuracy";
  int acc_w = 108 + text_width("100.0%", ns), head_w = text_width(acc_head, 2);
  if (acc_w < head_w) acc_w = head_w;
  char sub[96];
  if (total > 0)
    snprintf(sub, sizeof sub, "accuracy %.2f%% (%lld samples)", 100.0 * correct / total, (long long)total);
  else
    snprintf(sub, sizeof sub, "no samples");
  int gx = 40 + name_w + 12, gy = 112, gw = n * cs;
  int acc_x = gx + gw + 24;
  int cw = acc_x + acc_w + 16;
  if (cw < text_width(sub, 2) + 40) cw = text_width(sub, 2) + 40;
  if (cw < text_width("confusion matrix", 3) + 40) cw = text_width("confusion matrix", 3) + 40;
  canvas cv;
  damo_status s = canvas_new(&cv, cw, gy + gw + below + 56);
  if (s) return s;
  fill_rect(&cv, 0, 0, cv.w, cv.h, (rgb){250, 250, 252});
  text_at(&cv, cv.w / 2, 14, "confusion matrix", 3, INK, 1);
  text_at(&cv, cv.w / 2, 50, sub, 2, SUBTLE, 1);
  for (int r = 0; r < n; r++) {
    int64_t row = 0;
    for (int c = 0; c < n; c++) row += counts[r * n + c];
    for (int c = 0; c < n; c++) {
      int64_t v = counts[r * n + c];
      double f = row > 0 ? (double)v / row : 0;
      int x = gx + c * cs, y = gy + r * cs;
      rgb col = heat(f);
      fill_rect(&cv, x, y, x + cs, y + cs, col);
      if (r == c) rect_outline(&cv, x, y, x + cs, y + cs, (rgb){8, 48, 107});
      if (cnt_scale) {
        snprintf(buf, sizeof buf, "%lld", (long long)v);
        rgb ink = f > 0.45 ? WHITE : v == 0 ? (rgb){170, 180, 195} : INK;
        text_at(&cv, x + cs / 2 + 1, y + (cs - GLYPH_H * cnt_scale) / 2 + cnt_scale, buf, cnt_scale, ink, 1);
      }
    }
    /* Per-class accuracy (recall): a bar and the percentage. */
    double acc = row > 0 ? (double)counts[r * n + r] / row : 0;
    int y = gy + r * cs, bh = cs > 10 ? cs - 8 : cs - 2, by = y + (cs - bh) / 2;
    fill_rect(&cv, acc_x, by, acc_x + 100, by + bh, (rgb){232, 236, 242});
    fill_rect(&cv, acc_x, by, acc_x + (int)lround(100 * acc), by + bh, heat(0.15 + 0.7 * acc));
    if (row > 0)
      snprintf(buf, sizeof buf, "%.1f%%", 100 * acc);
    else
      snprintf(buf, sizeof buf, "-");
    draw_text(&cv, acc_x + 108, y + (cs - GLYPH_H * ns) / 2 + ns, buf, ns, INK, 0);
    /* Row name, right-aligned left of the grid. */
    text_at(&cv, gx - 8, y + (cs - GLYPH_H * ns) / 2 + ns, class_label(class_names, r, lab, sizeof lab), ns, INK, 2);
  }
  /* Column names under the grid. */
  for (int c = 0; c < n; c++) {
    const char *l = class_label(class_names, c, lab, sizeof lab);
    if (cols_flat) {
      text_at(&cv, gx + c * cs + cs / 2 + 1, gy + gw + 8, l, ns, INK, 1);
    } else {
      int x = gx + c * cs + (cs - GLYPH_H * ns) / 2 + ns;
      draw_text(&cv, x, gy + gw + 8 + text_width(l, ns), l, ns, INK, 1);
    }
  }
  rect_outline(&cv, gx - 1, gy - 1, gx + gw + 1, gy + gw + 1, FRAME);
  text_at(&cv, gx + gw / 2, gy + gw + below + 24, "predicted class", 2, SUBTLE, 1);
  draw_text(&cv, 10, gy + gw / 2 + text_width("true class", 2) / 2, "true class", 2, SUBTLE, 1);
  text_at(&cv, acc_x, gy - 26, "per-class accuracy", 2, SUBTLE, 0);
  s = damo_image_save_png(path, cv.img);
  damo_tensor_free(cv.img);
  return s;
}
