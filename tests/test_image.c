/* test_image.c - images (load/save/resize/model input), augmentation, the background
 * prefetcher and the PNG pictures of training. Every file it reads it writes itself first,
 * in a fresh temporary directory (kept when DAMO_TEST_KEEP is set, to look at the plots). */
#include "damo.h"
#include "data/prefetch.h"
#include "io/io.h"
#include "harness.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

#include "tmpfiles.h"

static unsigned char *read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  rewind(f);
  unsigned char *b = malloc((size_t)len);
  *n = fread(b, 1, (size_t)len, f);
  fclose(f);
  return b;
}

static damo_tensor *make_image(int h, int w, int c) {
  int64_t shape[3] = {h, w, c};
  return damo_tensor_new(DAMO_F32, 3, shape);
}

/* ------------------------------------------------------------------ files */

static void test_png_roundtrip(void) {
  damo_tensor *img = make_image(5, 7, 3);
  float *p = damo_tensor_f32(img);
  for (int i = 0; i < 5 * 7 * 3; i++) p[i] = (float)((i * 37) % 256);
  p[0] = -20;  /* clamps to 0 */
  p[1] = 300;  /* clamps to 255 */
  p[2] = 99.6f; /* rounds to 100 */
  CHECK(damo_image_save_png(tmp_path("rgb.png"), img) == DAMO_OK);
  damo_tensor *back = NULL;
  CHECK(damo_image_load(tmp_path("rgb.png"), 0, &back) == DAMO_OK);
  CHECK(back && back->ndim == 3 && back->shape[0] == 5 && back->shape[1] == 7 && back->shape[2] == 3);
  if (back) {
    const float *q = damo_tensor_f32(back);
    CHECK(q[0] == 0 && q[1] == 255 && q[2] == 100);
    int same = 1;
    for (int i = 3; i < 5 * 7 * 3; i++) same &= q[i] == p[i];
    CHECK(same);
  }
  damo_tensor_free(back);
  /* Colour to grey: luma. */
  back = NULL;
  CHECK(damo_image_load(tmp_path("rgb.png"), 1, &back) == DAMO_OK);
  if (back) {
    CHECK(back->shape[2] == 1);
    const float *q = damo_tensor_f32(back);
    float r = p[3 * 10], g = p[3 * 10 + 1], b = p[3 * 10 + 2];
    CHECK_NEAR(q[10], 0.299 * r + 0.587 * g + 0.114 * b, 1e-3);
  }
  damo_tensor_free(back);
  damo_tensor_free(img);
  /* Grey (H, W) to RGB: replicated. */
  int64_t s2[2] = {3, 4};
  damo_tensor *grey = damo_tensor_new(DAMO_F32, 2, s2);
  for (int i = 0; i < 12; i++) damo_tensor_f32(grey)[i] = (float)(i * 20);
  CHECK(damo_image_save_png(tmp_path("grey.png"), grey) == DAMO_OK);
  back = NULL;
  CHECK(damo_image_load(tmp_path("grey.png"), 3, &back) == DAMO_OK);
  if (back) {
    CHECK(back->shape[0] == 3 && back->shape[1] == 4 && back->shape[2] == 3);
    const float *q = damo_tensor_f32(back);
    int ok = 1;
    for (int i = 0; i < 12; i++) ok &= q[3 * i] == i * 20 && q[3 * i + 1] == i * 20 && q[3 * i + 2] == i * 20;
    CHECK(ok);
  }
  damo_tensor_free(back);
  damo_tensor_free(grey);
  /* Bad arguments. */
  damo_tensor *t = make_image(2, 2, 2);
  CHECK(damo_image_save_png(tmp_path("two.png"), t) == DAMO_ERR_SHAPE);
  damo_tensor_free(t);
  back = NULL;
  CHECK(damo_image_load(tmp_path("rgb.png"), 2, &back) == DAMO_ERR_INVALID_ARG && back == NULL);
}

static void test_pgm_jpeg_bmp(void) {
  /* Binary PGM, written by hand. */
  unsigned char pgm[64];
  int n = snprintf((char *)pgm, sizeof pgm, "P5\n3 2\n255\n");
  const unsigned char px[6] = {0, 50, 100, 150, 200, 255};
  memcpy(pgm + n, px, 6);
  write_bytes(tmp_path("a.pgm"), pgm, (size_t)n + 6);
  damo_tensor *t = NULL;
  CHECK(damo_image_load(tmp_path("a.pgm"), 0, &t) == DAMO_OK);
  if (t) {
    CHECK(t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 1);
    int ok = 1;
    for (int i = 0; i < 6; i++) ok &= damo_tensor_f32(t)[i] == px[i];
    CHECK(ok);
  }
  damo_tensor_free(t);
  /* JPEG of a flat colour: lossy, but close. */
  unsigned char rgb[16 * 16 * 3];
  for (int i = 0; i < 16 * 16; i++) {
    rgb[3 * i] = 200;
    rgb[3 * i + 1] = 100;
    rgb[3 * i + 2] = 50;
  }
  CHECK(stbi_write_jpg(tmp_path("flat.jpg"), 16, 16, 3, rgb, 95) != 0);
  t = NULL;
  CHECK(damo_image_load(tmp_path("flat.jpg"), 3, &t) == DAMO_OK);
  if (t) {
    const float *q = damo_tensor_f32(t);
    CHECK(t->shape[0] == 16 && t->shape[1] == 16 && t->shape[2] == 3);
    CHECK_NEAR(q[0], 200, 6);
    CHECK_NEAR(q[1], 100, 6);
    CHECK_NEAR(q[2], 50, 6);
  }
  damo_tensor_free(t);
  t = NULL;
  CHECK(damo_image_load(tmp_path("flat.jpg"), 1, &t) == DAMO_OK);
  if (t) CHECK_NEAR(damo_tensor_f32(t)[17], 0.299 * 200 + 0.587 * 100 + 0.114 * 50, 6);
  damo_tensor_free(t);
  /* BMP keeps exact values. */
  CHECK(stbi_write_bmp(tmp_path("flat.bmp"), 16, 16, 3, rgb) != 0);
  t = NULL;
  CHECK(damo_image_load(tmp_path("flat.bmp"), 0, &t) == DAMO_OK);
  if (t) CHECK(t->shape[2] == 3 && damo_tensor_f32(t)[300] == rgb[300]);
  damo_tensor_free(t);
}

/* Loading path must fail with status want and a message naming the file. */
static void expect_fail(const char *path, damo_status want) {
  damo_tensor *t = (damo_tensor *)1;
  damo_status s = damo_image_load(path, 0, &t);
  CHECK_MSG(s == want, "%s: got %s, want %s (%s)", path, damo_status_name(s), damo_status_name(want), damo_last_error());
  CHECK(t == NULL);
  CHECK_MSG(strstr(damo_last_error(), path) != NULL, "message does not name the file: %s", damo_last_error());
}

static void test_bad_files(void) {
  expect_fail(tmp_path("missing.png"), DAMO_ERR_NOT_FOUND);
  expect_fail(tmpdir, DAMO_ERR_IO);
  const char *text = "hello, this is not an image\n";
  write_bytes(tmp_path("notes.txt"), text, strlen(text));
  expect_fail(tmp_path("notes.txt"), DAMO_ERR_FORMAT);
  write_bytes(tmp_path("empty.png"), "", 0);
  expect_fail(tmp_path("empty.png"), DAMO_ERR_FORMAT);
  /* A real PNG, then damaged copies of it. */
  damo_tensor *img = make_image(32, 32, 3);
  for (int i = 0; i < 32 * 32 * 3; i++) damo_tensor_f32(img)[i] = (float)((i * 7) % 256);
  CHECK(damo_image_save_png(tmp_path("good.png"), img) == DAMO_OK);
  damo_tensor_free(img);
  size_t n = 0;
  unsigned char *b = read_bytes(tmp_path("good.png"), &n);
  CHECK(b && n > 100);
  if (!b) return;
  unsigned char *c = malloc(n);
  /* Truncated: the first half only. */
  write_bytes(tmp_path("truncated.png"), b, n / 2);
  expect_fail(tmp_path("truncated.png"), DAMO_ERR_FORMAT);
  /* Flipped bytes in the signature. */
  memcpy(c, b, n);
  for (int i = 1; i < 6; i++) c[i] ^= 0xff;
  write_bytes(tmp_path("flipped.png"), c, n);
  expect_fail(tmp_path("flipped.png"), DAMO_ERR_FORMAT);
  /* Every byte of the compressed data flipped: zlib stream broken. */
  memcpy(c, b, n);
  for (size_t i = 41; i + 16 < n; i++) c[i] ^= 0x5a;
  write_bytes(tmp_path("scrambled.png"), c, n);
  expect_fail(tmp_path("scrambled.png"), DAMO_ERR_FORMAT);
  /* An absurd width in IHDR (bytes 16..19, big-endian): refused before decoding. */
  memcpy(c, b, n);
  c[16] = 0;
  c[17] = 0x10;
  c[18] = 0;
  c[19] = 0;
  write_bytes(tmp_path("huge.png"), c, n);
  expect_fail(tmp_path("huge.png"), DAMO_ERR_FORMAT);
  /* Issue 18.6: 60000 x 2000 is within the pixel cap, but not in a file of a few hundred
   * bytes: refused from the header, before stb allocates the claim. */
  memcpy(c, b, n);
  c[16] = 0, c[17] = 0, c[18] = 0xEA, c[19] = 0x60; /* width 60000 */
  c[20] = 0, c[21] = 0, c[22] = 0x07, c[23] = 0xD0; /* height 2000 */
  write_bytes(tmp_path("claims.png"), c, n);
  expect_fail(tmp_path("claims.png"), DAMO_ERR_FORMAT);
  char want[96];
  snprintf(want, sizeof want, "declares 60000 x 2000 pixels but a %zu-byte file cannot hold", n);
  CHECK_MSG(strstr(damo_last_error(), want) && strstr(damo_last_error(), "claims.png"), "%s", damo_last_error());
  free(c);
  free(b);
}

/* ------------------------------------------------------------------ resize */

static void test_resize(void) {
  damo_tensor *k = make_image(13, 17, 3), *r = NULL;
  for (int i = 0; i < 13 * 17 * 3; i++) damo_tensor_f32(k)[i] = 77;
  const int sizes[4][2] = {{5, 29}, {40, 3}, {1, 1}, {13, 17}};
  for (int t = 0; t < 4; t++) {
    CHECK(damo_image_resize(k, sizes[t][0], sizes[t][1], &r) == DAMO_OK);
    if (!r) continue;
    CHECK(r->shape[0] == sizes[t][0] && r->shape[1] == sizes[t][1] && r->shape[2] == 3);
    double worst = 0;
    for (int64_t i = 0; i < damo_tensor_numel(r); i++) worst = fmax(worst, fabs(damo_tensor_f32(r)[i] - 77));
    CHECK_MSG(worst < 1e-3, "constant image changed by %g at %dx%d", worst, sizes[t][0], sizes[t][1]);
    damo_tensor_free(r);
    r = NULL;
  }
  damo_tensor_free(k);
  /* 2x down: means of 2x2 blocks. 3x down: means of 3x3 blocks (area averaging). */
  for (int f = 2; f <= 3; f++) {
    int n = 4 * f;
    damo_tensor *a = make_image(n, n, 1);
    float *p = damo_tensor_f32(a);
    for (int i = 0; i < n * n; i++) p[i] = (float)((i * 13 + i / n * 5) % 31);
    CHECK(damo_image_resize(a, 4, 4, &r) == DAMO_OK);
    if (r) {
      double worst = 0;
      for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
          double m = 0;
          for (int dy = 0; dy < f; dy++)
            for (int dx = 0; dx < f; dx++) m += p[(y * f + dy) * n + x * f + dx];
          m /= f * f;
          worst = fmax(worst, fabs(damo_tensor_f32(r)[y * 4 + x] - m));
        }
      CHECK_MSG(worst < 1e-4, "%dx downscale is off the block means by %g", f, worst);
    }
    damo_tensor_free(r);
    r = NULL;
    damo_tensor_free(a);
  }
  /* 2x up, bilinear with half-pixel centres: row [0, 10] -> [0, 2.5, 7.5, 10]. */
  damo_tensor *u = make_image(2, 2, 1);
  float v4[4] = {0, 10, 20, 30};
  memcpy(damo_tensor_f32(u), v4, sizeof v4);
  CHECK(damo_image_resize(u, 4, 4, &r) == DAMO_OK);
  if (r) {
    const float *q = damo_tensor_f32(r);
    CHECK_NEAR(q[0], 0, 1e-5);
    CHECK_NEAR(q[1], 2.5, 1e-5);
    CHECK_NEAR(q[2], 7.5, 1e-5);
    CHECK_NEAR(q[3], 10, 1e-5);
    CHECK_NEAR(q[4], 5, 1e-5); /* row 1 is a quarter of the way to row [20, 30] */
    CHECK_NEAR(q[15], 30, 1e-5);
  }
  damo_tensor_free(r);
  r = NULL;
  damo_tensor_free(u);
  /* Batches keep N and C. */
  int64_t bs[4] = {2, 6, 8, 3};
  damo_tensor *b = damo_tensor_new(DAMO_F32, 4, bs);
  CHECK(damo_image_resize(b, 3, 4, &r) == DAMO_OK);
  CHECK(r && r->ndim == 4 && r->shape[0] == 2 && r->shape[1] == 3 && r->shape[2] == 4 && r->shape[3] == 3);
  damo_tensor_free(r);
  r = NULL;
  CHECK(damo_image_resize(b, 0, 4, &r) == DAMO_ERR_INVALID_ARG);
  damo_tensor_free(b);
}

static void test_model_input(void) {
  /* A dark "shoe" on light paper, 60 tall x 40 wide, RGB. */
  damo_tensor *img = make_image(60, 40, 3);
  float *p = damo_tensor_f32(img);
  for (int y = 0; y < 60; y++)
    for (int x = 0; x < 40; x++)
      for (int k = 0; k < 3; k++) p[(y * 40 + x) * 3 + k] = (y >= 20 && y < 40 && x >= 10 && x < 30) ? 20 : 240;
  damo_tensor *m = NULL;
  CHECK(damo_image_to_model_input(img, 28, 28, 1, 1, &m) == DAMO_OK);
  if (m) {
    const float *q = damo_tensor_f32(m);
    CHECK(m->ndim == 3 && m->shape[0] == 28 && m->shape[1] == 28 && m->shape[2] == 1);
    CHECK_NEAR(q[0], 0, 1e-3);             /* padding column: background, inverted */
    CHECK_NEAR(q[10 * 28 + 7], 0, 1e-3);    /* paper: inverted to 0 */
    CHECK_NEAR(q[14 * 28 + 14], 233.75, 0.5); /* (240 - 20) * 255 / 240 */
    float mx = 0;
    for (int i = 0; i < 28 * 28; i++) mx = fmaxf(mx, q[i]);
    CHECK(mx <= 255);
  }
  damo_tensor_free(m);
  m = NULL;
  /* Without inversion: padded with the paper colour. */
  CHECK(damo_image_to_model_input(img, 28, 28, 3, 0, &m) == DAMO_OK);
  if (m) {
    CHECK(m->shape[2] == 3);
    CHECK_NEAR(damo_tensor_f32(m)[0], 240, 1e-3);
    CHECK_NEAR(damo_tensor_f32(m)[(14 * 28 + 14) * 3], 20, 1e-3);
  }
  damo_tensor_free(m);
  m = NULL;
  /* Already dark background: left alone even when asked to invert. */
  for (int i = 0; i < 60 * 40 * 3; i++) p[i] = 255 - p[i];
  CHECK(damo_image_to_model_input(img, 28, 28, 1, 1, &m) == DAMO_OK);
  if (m) {
    CHECK_NEAR(damo_tensor_f32(m)[0], 15, 1e-3);
    CHECK_NEAR(damo_tensor_f32(m)[14 * 28 + 14], 235, 1e-3);
  }
  damo_tensor_free(m);
  m = NULL;
  CHECK(damo_image_to_model_input(img, 28, 28, 2, 1, &m) == DAMO_ERR_INVALID_ARG);
  damo_tensor_free(img);
}

/* ------------------------------------------------------------------ augmentation */

enum { AN = 6, AH = 12, AW = 10, AC = 2 };

static void fill_batch(float *b, int64_t n) {
  for (int64_t i = 0; i < n; i++) b[i] = (float)((i * 29) % 97) / 96.0f;
}

static damo_augment_options all_on(void) {
  damo_augment_options o = {0};
  o.max_shift = 2;
  o.flip_prob = 0.5f;
  o.max_rotation_deg = 12;
  o.zoom_min = 0.9f;
  o.zoom_max = 1.1f;
  o.erase_prob = 0.5f;
  o.erase_fill_max = 1;
  return o;
}

static void test_augment_determinism(void) {
  const int64_t n = (int64_t)AN * AH * AW * AC;
  float *src = malloc(n * sizeof *src), *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
  fill_batch(src, n);
  damo_augment_options o = all_on();
  damo_rng r1, r2;
  damo_rng_seed(&r1, 42);
  damo_rng_seed(&r2, 42);
  CHECK(damo_augment_batch(&o, src, a, AN, AH, AW, AC, &r1, NULL) == DAMO_OK);
  CHECK(damo_augment_batch(&o, src, b, AN, AH, AW, AC, &r2, NULL) == DAMO_OK);
  CHECK(memcmp(a, b, n * sizeof *a) == 0);
  CHECK(memcmp(a, src, n * sizeof *a) != 0);
  /* In place and with OpenMP: the same result. */
  damo_rng_seed(&r2, 42);
  memcpy(b, src, n * sizeof *b);
  float *scratch = malloc((size_t)AH * AW * AC * sizeof *scratch);
  CHECK(damo_augment_batch(&o, b, b, AN, AH, AW, AC, &r2, scratch) == DAMO_OK);
  CHECK(memcmp(a, b, n * sizeof *a) == 0);
  o.parallel = 1;
  damo_rng_seed(&r2, 42);
  memcpy(b, src, n * sizeof *b);
  CHECK(damo_augment_batch(&o, b, b, AN, AH, AW, AC, &r2, NULL) == DAMO_OK);
  CHECK(memcmp(a, b, n * sizeof *a) == 0);
  o.parallel = 0;
  /* Another seed, or the next call on the same rng: different. */
  damo_rng_seed(&r2, 43);
  CHECK(damo_augment_batch(&o, src, b, AN, AH, AW, AC, &r2, NULL) == DAMO_OK);
  CHECK(memcmp(a, b, n * sizeof *a) != 0);
  CHECK(damo_augment_batch(&o, src, b, AN, AH, AW, AC, &r1, NULL) == DAMO_OK);
  CHECK(memcmp(a, b, n * sizeof *a) != 0);
  /* Zero options: nothing changes, in place or not. */
  damo_augment_options z = {0};
  CHECK(damo_augment_batch(&z, src, b, AN, AH, AW, AC, &r1, NULL) == DAMO_OK);
  CHECK(memcmp(src, b, n * sizeof *b) == 0);
  CHECK(damo_augment_batch(&z, b, b, AN, AH, AW, AC, &r1, NULL) == DAMO_OK);
  CHECK(memcmp(src, b, n * sizeof *b) == 0);
  /* Rotation and zoom of a constant image with edge fill stay constant; with zero fill
   * every value stays within [0, the constant]. */
  for (int64_t i = 0; i < n; i++) b[i] = 0.75f;
  damo_augment_options g = {0};
  g.max_rotation_deg = 25;
  g.zoom_min = 0.8f;
  g.zoom_max = 1.25f;
  g.max_shift = 3;
  g.edge_fill = 1;
  CHECK(damo_augment_batch(&g, b, a, AN, AH, AW, AC, &r1, NULL) == DAMO_OK);
  double worst = 0;
  for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - 0.75));
  CHECK_MSG(worst < 1e-5, "edge fill changed a constant image by %g", worst);
  g.edge_fill = 0;
  CHECK(damo_augment_batch(&g, b, a, AN, AH, AW, AC, &r1, NULL) == DAMO_OK);
  int in_range = 1;
  for (int64_t i = 0; i < n; i++) in_range &= a[i] >= 0 && a[i] <= 0.75f + 1e-6f;
  CHECK(in_range);
  /* Bad options. */
  damo_augment_options bad = {0};
  bad.flip_prob = 1.5f;
  CHECK(damo_augment_batch(&bad, src, b, AN, AH, AW, AC, &r1, NULL) == DAMO_ERR_INVALID_ARG);
  bad = (damo_augment_options){0};
  bad.zoom_min = 1.2f;
  bad.zoom_max = 1.1f;
  CHECK(damo_augment_batch(&bad, src, b, AN, AH, AW, AC, &r1, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_augment_batch(&z, src, src + 1, AN, AH, AW, AC, &r1, NULL) == DAMO_ERR_INVALID_ARG);
  free(scratch);
  free(src);
  free(a);
  free(b);
}

static void test_augment_flip_shift(void) {
  const int n = AH * AW * AC;
  float src[AH * AW * AC], out[AH * AW * AC], twice[AH * AW * AC];
  fill_batch(src, n);
  damo_augment_options o = {0};
  o.flip_prob = 1;
  damo_rng r;
  damo_rng_seed(&r, 7);
  CHECK(damo_augment_batch(&o, src, out, 1, AH, AW, AC, &r, NULL) == DAMO_OK);
  int mirrored = 1;
  for (int y = 0; y < AH; y++)
    for (int x = 0; x < AW; x++)
      for (int k = 0; k < AC; k++) mirrored &= out[(y * AW + x) * AC + k] == src[(y * AW + (AW - 1 - x)) * AC + k];
  CHECK(mirrored);
  CHECK(damo_augment_batch(&o, out, twice, 1, AH, AW, AC, &r, NULL) == DAMO_OK);
  CHECK(memcmp(twice, src, sizeof src) == 0);
  /* One bright pixel moves by at most max_shift per axis and stays exact. */
  enum { S = 15 };
  float img[S * S], res[S * S];
  damo_augment_options sh = {0};
  sh.max_shift = 3;
  int moved = 0, ok = 1;
  for (int t = 0; t < 40; t++) {
    memset(img, 0, sizeof img);
    img[7 * S + 7] = 1;
    CHECK(damo_augment_batch(&sh, img, res, 1, S, S, 1, &r, NULL) == DAMO_OK);
    int cnt = 0, py = -1, px = -1;
    for (int i = 0; i < S * S; i++)
      if (res[i] != 0) {
        cnt++;
        py = i / S;
        px = i % S;
      }
    ok &= cnt == 1 && res[py * S + px] == 1 && abs(py - 7) <= 3 && abs(px - 7) <= 3;
    moved |= py != 7 || px != 7;
  }
  CHECK(ok);
  CHECK(moved);
}

static void test_augment_erase_normalise(void) {
  enum { N = 8, H = 16, W = 16 };
  static float src[N * H * W], out[N * H * W];
  fill_batch(src, N * H * W);
  damo_augment_options o = {0};
  o.erase_prob = 1;
  o.erase_fill_max = 1;
  damo_rng r;
  damo_rng_seed(&r, 3);
  CHECK(damo_augment_batch(&o, src, out, N, H, W, 1, &r, NULL) == DAMO_OK);
  int in_range = 1, changed = 0;
  for (int i = 0; i < N * H * W; i++) {
    in_range &= out[i] >= 0 && out[i] <= 1;
    changed += out[i] != src[i];
  }
  CHECK(in_range);
  CHECK(changed > N * H * W / 100);
  o.erase_fill_max = 0; /* erase to zero: each image gets a zero rectangle */
  o.erase_area_min = 0.1f;
  o.erase_area_max = 0.2f;
  CHECK(damo_augment_batch(&o, src, out, N, H, W, 1, &r, NULL) == DAMO_OK);
  for (int b = 0; b < N; b++) {
    int zeros = 0;
    for (int i = 0; i < H * W; i++) zeros += out[b * H * W + i] == 0 && src[b * H * W + i] != 0;
    CHECK_MSG(zeros >= H * W / 20 && zeros <= H * W / 4, "image %d: %d pixels erased", b, zeros);
  }
  /* Normalisation only. */
  float mean[2] = {0.5f, 0.25f}, sd[2] = {0.5f, 2.0f};
  damo_augment_options nm = {0};
  nm.mean = mean;
  nm.std = sd;
  CHECK(damo_augment_batch(&nm, src, out, 4, 8, 8, 2, &r, NULL) == DAMO_OK);
  CHECK_NEAR(out[0], (src[0] - 0.5) / 0.5, 1e-6);
  CHECK_NEAR(out[1], (src[1] - 0.25) / 2.0, 1e-6);
  CHECK_NEAR(out[7], (src[7] - 0.25) / 2.0, 1e-6);
}

/* ------------------------------------------------------------------ prefetcher */

typedef struct prod_ctx {
  int64_t fail_at; /* batch index that fails, or -1 */
  int64_t per;     /* floats per batch */
  int slow;
} prod_ctx;

static damo_status produce(void *ctx, int64_t b, float *x, void *y) {
  prod_ctx *c = ctx;
  if (c->slow) nanosleep(&(struct timespec){0, 200000}, NULL);
  if (b == c->fail_at) return damo_error(DAMO_ERR_IO, "producer says batch %lld is unreadable", (long long)b);
  for (int64_t i = 0; i < c->per; i++) x[i] = (float)(b * 1000 + i);
  *(int64_t *)y = b;
  return DAMO_OK;
}

static void test_prefetch(void) {
  prod_ctx c = {-1, 64, 0};
  damo_prefetcher *p = damo_prefetcher_new(64 * sizeof(float), sizeof(int64_t), produce, &c);
  CHECK(p != NULL);
  if (!p) return;
  float *x;
  void *y;
  CHECK(damo_prefetcher_next(p, &x, &y) == DAMO_ERR_STATE); /* not started */
  for (int epoch = 0; epoch < 3; epoch++) {
    c.slow = epoch == 1; /* once with the consumer waiting on the producer */
    CHECK(damo_prefetcher_start(p, 5, 10) == DAMO_OK);
    int ok = 1;
    for (int64_t b = 5; b < 15; b++) {
      damo_status s = damo_prefetcher_next(p, &x, &y);
      ok &= s == DAMO_OK && *(int64_t *)y == b && x[0] == b * 1000 && x[63] == b * 1000 + 63;
      if (epoch == 2) nanosleep(&(struct timespec){0, 100000}, NULL); /* producer waiting on us */
    }
    CHECK(ok);
    CHECK(damo_prefetcher_next(p, &x, &y) == DAMO_ERR_STATE);
  }
  /* A producer error reaches the consumer at that batch, with its message. */
  c.fail_at = 3;
  CHECK(damo_prefetcher_start(p, 0, 10) == DAMO_OK);
  for (int b = 0; b < 3; b++) CHECK(damo_prefetcher_next(p, &x, &y) == DAMO_OK && *(int64_t *)y == b);
  CHECK(damo_prefetcher_next(p, &x, &y) == DAMO_ERR_IO);
  CHECK(strstr(damo_last_error(), "unreadable") != NULL && strstr(damo_last_error(), "batch 3") != NULL);
  CHECK(damo_prefetcher_next(p, &x, &y) == DAMO_ERR_STATE);
  /* Restart after an error; then free mid-run (producer blocked on a full buffer). */
  c.fail_at = -1;
  CHECK(damo_prefetcher_start(p, 0, 1000000) == DAMO_OK);
  CHECK(damo_prefetcher_next(p, &x, &y) == DAMO_OK);
  CHECK(damo_prefetcher_next(p, &x, &y) == DAMO_OK && *(int64_t *)y == 1);
  nanosleep(&(struct timespec){0, 2000000}, NULL);
  damo_prefetcher_free(p);
  /* Free right after start, and free of a never-started one. */
  c.slow = 1;
  p = damo_prefetcher_new(64 * sizeof(float), sizeof(int64_t), produce, &c);
  CHECK(p && damo_prefetcher_start(p, 0, 100) == DAMO_OK);
  damo_prefetcher_free(p);
  damo_prefetcher_free(damo_prefetcher_new(16, 0, produce, &c));
  CHECK(damo_prefetcher_new(16, 0, NULL, NULL) == NULL);
}

/* ------------------------------------------------------------------ pictures */

/* The PNG at path loads back with this size and shows more than one colour. */
static void check_picture(const char *path, int64_t min_w, int64_t min_h) {
  damo_tensor *t = NULL;
  CHECK_MSG(damo_image_load(path, 3, &t) == DAMO_OK, "%s", damo_last_error());
  if (!t) return;
  CHECK(t->shape[1] >= min_w && t->shape[0] >= min_h);
  const float *q = damo_tensor_f32(t);
  int64_t n = t->shape[0] * t->shape[1], dark = 0, coloured = 0;
  for (int64_t i = 0; i < n; i++) {
    float r = q[3 * i], g = q[3 * i + 1], b = q[3 * i + 2];
    dark += r + g + b < 300;
    coloured += fabsf(r - b) > 60;
  }
  CHECK_MSG(dark > n / 500 && coloured > n / 500, "%s looks blank: %lld dark, %lld coloured pixels", path,
            (long long)dark, (long long)coloured);
  damo_tensor_free(t);
}

/* Plain (ASCII) Netpbm files, which stb_image refuses: P2 with a comment and maxval 15, P3,
 * P1 with unseparated bits; hostile and truncated headers fail before allocating. */
static void test_plain_pnm(void) {
  const char *p2 = "P2\n# made by hand\n3 2\n15\n0 15 5\n10 3 15\n";
  write_bytes(tmp_path("a.pgm"), p2, strlen(p2));
  damo_tensor *t = NULL;
  CHECK_MSG(damo_image_load(tmp_path("a.pgm"), 0, &t) == DAMO_OK, "%s", damo_last_error());
  CHECK(t && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 1);
  const float want[6] = {0, 255, 85, 170, 51, 255};
  if (t) CHECK_CLOSE(damo_tensor_f32(t), want, 6, 1e-6, 0);
  damo_tensor_free(t);
  const char *p3 = "P3 2 1 255  255 0 0   0 0 255";
  write_bytes(tmp_path("b.ppm"), p3, strlen(p3));
  CHECK(damo_image_load(tmp_path("b.ppm"), 0, &t) == DAMO_OK && t->shape[2] == 3);
  if (t) CHECK(damo_tensor_f32(t)[0] == 255 && damo_tensor_f32(t)[5] == 255 && damo_tensor_f32(t)[1] == 0);
  damo_tensor_free(t);
  const char *p1 = "P1\n4 1\n0101";
  write_bytes(tmp_path("c.pbm"), p1, strlen(p1));
  CHECK(damo_image_load(tmp_path("c.pbm"), 0, &t) == DAMO_OK);
  const float bits[4] = {255, 0, 255, 0}; /* 1 is black */
  if (t) CHECK_CLOSE(damo_tensor_f32(t), bits, 4, 1e-6, 0);
  damo_tensor_free(t);
  const char *huge = "P2 60000 60000 255 1 2 3";
  write_bytes(tmp_path("d.pgm"), huge, strlen(huge));
  CHECK(damo_image_load(tmp_path("d.pgm"), 0, &t) == DAMO_ERR_FORMAT && !t);
  CHECK_MSG(strstr(damo_last_error(), "d.pgm") && strstr(damo_last_error(), "at most"), "%s", damo_last_error());
  const char *cut = "P2 4 4 255 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15";
  write_bytes(tmp_path("e.pgm"), cut, strlen(cut));
  CHECK(damo_image_load(tmp_path("e.pgm"), 0, &t) == DAMO_ERR_FORMAT && !t);
  CHECK_MSG(strstr(damo_last_error(), "sample 16 of 16"), "%s", damo_last_error());
  const char *over = "P2 2 1 10 3 11";
  write_bytes(tmp_path("f.pgm"), over, strlen(over));
  CHECK(damo_image_load(tmp_path("f.pgm"), 0, &t) == DAMO_ERR_FORMAT && strstr(damo_last_error(), "maxval 10"));
}

/* The epoch axis: whole epochs only (a 2.5 step used to print "2" under the tick at 2.5),
 * evenly spaced, inside 1..n, at most 10. */
static void test_epoch_ticks(void) {
  for (int n = 1; n <= 300; n++) {
    double t[16];
    int k = damo_plot_epoch_ticks(n, t, 16);
    int ok = k >= 1 && k <= 10;
    for (int i = 0; i < k && ok; i++) ok = t[i] == floor(t[i]) && t[i] >= 1 && t[i] <= n;
    for (int i = 2; i < k && ok; i++) ok = t[i] - t[i - 1] == t[1] - t[0];
    CHECK_MSG(ok, "%d epochs: %d ticks, first %g, second %g", n, k, k > 0 ? t[0] : -1, k > 1 ? t[1] : -1);
  }
  double t[16];
  CHECK(damo_plot_epoch_ticks(20, t, 16) == 10 && t[0] == 2 && t[9] == 20); /* step 2, not 2.5 */
}

static void test_plots(void) {
  enum { E = 15 };
  float tl[E], vl[E], ta[E], va[E];
  for (int i = 0; i < E; i++) {
    tl[i] = 0.9f * expf(-0.25f * i) + 0.22f;
    vl[i] = 0.85f * expf(-0.2f * i) + 0.3f + 0.004f * i;
    ta[i] = 0.93f - 0.25f * expf(-0.3f * i);
    va[i] = 0.89f - 0.2f * expf(-0.25f * i);
  }
  vl[4] = NAN; /* a gap */
  CHECK(damo_plot_history_png(tmp_path("history.png"), "Fashion-MNIST CNN (Adam, lr 0.001)", E, tl, vl, ta, va) == DAMO_OK);
  check_picture(tmp_path("history.png"), 800, 300);
  CHECK(damo_plot_history_png(tmp_path("history_noval.png"), NULL, 6, tl, NULL, ta, NULL) == DAMO_OK);
  check_picture(tmp_path("history_noval.png"), 800, 300);
  CHECK(damo_plot_history_png(tmp_path("history_one.png"), "one epoch", 1, tl, vl, NULL, NULL) == DAMO_OK);
  enum { L = 120 };
  float ll[L], lv[L];
  for (int i = 0; i < L; i++) {
    ll[i] = 2.0f / (1 + 0.1f * i) + 0.05f * sinf(i * 0.7f);
    lv[i] = 2.1f / (1 + 0.08f * i) + 0.002f * i;
  }
  CHECK(damo_plot_history_png(tmp_path("history_long.png"), "120 epochs, loss only", L, ll, lv, NULL, NULL) == DAMO_OK);
  check_picture(tmp_path("history_long.png"), 500, 300);
  float nan4[4] = {NAN, NAN, NAN, NAN};
  CHECK(damo_plot_history_png(tmp_path("nothing.png"), "x", 4, nan4, NULL, NULL, nan4) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_plot_history_png(tmp_path("nothing.png"), "x", 0, tl, NULL, NULL, NULL) == DAMO_ERR_INVALID_ARG);

  static const char *const names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                        "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  int64_t cm[100];
  for (int r = 0; r < 10; r++)
    for (int c = 0; c < 10; c++) cm[r * 10 + c] = r == c ? 800 + 17 * r : ((r * 7 + c * 3) % 11 == 0 ? 60 : (r + c) % 4);
  cm[6 * 10 + 0] = 120; /* shirts taken for T-shirts */
  CHECK(damo_plot_confusion_png(tmp_path("confusion.png"), 10, cm, names) == DAMO_OK);
  check_picture(tmp_path("confusion.png"), 600, 600);
  int64_t cm2[4] = {50, 3, 7, 40};
  CHECK(damo_plot_confusion_png(tmp_path("confusion2.png"), 2, cm2, NULL) == DAMO_OK);
  check_picture(tmp_path("confusion2.png"), 300, 300);
  enum { K = 30 };
  static int64_t big[K * K];
  for (int i = 0; i < K * K; i++) big[i] = i / K == i % K ? 950 : (i * 7919) % 13 == 0 ? 12 : (i % 3);
  CHECK(damo_plot_confusion_png(tmp_path("confusion30.png"), K, big, NULL) == DAMO_OK);
  check_picture(tmp_path("confusion30.png"), 600, 600);
  cm2[1] = -1;
  CHECK(damo_plot_confusion_png(tmp_path("bad.png"), 2, cm2, NULL) == DAMO_ERR_INVALID_ARG);
}

int main(void) {
  tmpdir_template("image");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_png_roundtrip);
  RUN(test_pgm_jpeg_bmp);
  RUN(test_bad_files);
  RUN(test_resize);
  RUN(test_model_input);
  RUN(test_augment_determinism);
  RUN(test_augment_flip_shift);
  RUN(test_augment_erase_normalise);
  RUN(test_prefetch);
  RUN(test_plain_pnm);
  RUN(test_epoch_ticks);
  RUN(test_plots);
  if (getenv("DAMO_TEST_KEEP"))
    fprintf(stderr, "files kept in %s\n", tmpdir);
  else
    remove_tmpdir();
  return test_summary("image");
}
