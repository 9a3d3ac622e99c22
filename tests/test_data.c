/* test_data.c - data loading and preparation: IDX files (plain and gzip, and every way one
 * can be broken), CSV tables (good files and errors that must name the line and column),
 * the fashion-mnist loader (on a small fake copy in a temp dir, the missing case, and the
 * real data set when it is installed) and the preprocessing helpers. */
#include "damo.h"
#include "harness.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "tmpfiles.h"

static void write_gz(const char *path, const void *data, size_t n) {
  gzFile g = gzopen(path, "wb");
  if (!g) return;
  if (n) gzwrite(g, data, (unsigned)n);
  gzclose(g);
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int err_has(const char *s) { return strstr(damo_last_error(), s) != NULL; }

/* An IDX image of 0x08 data: header then the given bytes. Returns its length. */
static size_t make_idx(unsigned char *buf, int ndim, const uint32_t *dims, const unsigned char *data, size_t n) {
  buf[0] = buf[1] = 0;
  buf[2] = 0x08;
  buf[3] = (unsigned char)ndim;
  size_t o = 4;
  for (int i = 0; i < ndim; i++, o += 4) {
    buf[o] = (unsigned char)(dims[i] >> 24);
    buf[o + 1] = (unsigned char)(dims[i] >> 16);
    buf[o + 2] = (unsigned char)(dims[i] >> 8);
    buf[o + 3] = (unsigned char)dims[i];
  }
  memcpy(buf + o, data, n);
  return o + n;
}

/* ------------------------------------------------------------------ IDX */

/* Peak resident memory so far, in KiB. */
static long peak_rss_kib(void) {
  struct rusage ru;
  return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

static void expect_idx_fail(const char *path, damo_status want, const char *needle) {
  damo_tensor *t = (damo_tensor *)1;
  damo_status s = damo_idx_load(path, &t);
  CHECK_MSG(s == want, "got %s (%s)", damo_status_name(s), damo_last_error());
  CHECK(t == NULL);
  CHECK_MSG(err_has(path), "message does not name the file: %s", damo_last_error());
  if (needle) CHECK_MSG(err_has(needle), "'%s' not in: %s", needle, damo_last_error());
}

/* Issue 18.6: the loader zero-filled a tensor of the header's shape before reading any data,
 * so a 12-byte file claiming gigabytes allocated (and touched) them all. The header here
 * claims 8192 x 65536 = 512 MiB; each load must fail with the truncation named (file, byte
 * offset, size expected) and the process's peak memory must not grow by the claim. */
static void test_idx_huge_header(void) {
  uint32_t dims[] = {8192, 65536};
  unsigned char head[12];
  size_t hn = make_idx(head, 2, dims, (const unsigned char *)"", 0);
  const char *plain = tmp_path("huge.idx"), *gz = tmp_path("huge.idx.gz"), *gz_part = tmp_path("huge_part.idx.gz");
  write_bytes(plain, head, hn);
  write_gz(gz, head, hn);
  /* 3 MiB of real data under the same claim: read across growing chunks, then short */
  size_t part = (size_t)3 << 20;
  unsigned char *big = calloc(1, hn + part);
  if (!big) return;
  memcpy(big, head, hn);
  for (size_t i = 0; i < part; i++) big[hn + i] = (unsigned char)(i * 7);
  write_gz(gz_part, big, hn + part);
  long before = peak_rss_kib();
  expect_idx_fail(plain, DAMO_ERR_FORMAT, "truncated");
  CHECK_MSG(err_has("needs 536870912 bytes from byte offset 12") && err_has("file ends at byte offset 12"), "%s",
            damo_last_error());
  expect_idx_fail(gz, DAMO_ERR_FORMAT, "truncated");
  CHECK_MSG(err_has("needs 536870912 bytes from byte offset 12") && err_has("ran out at byte offset 12"), "%s",
            damo_last_error());
  expect_idx_fail(gz_part, DAMO_ERR_FORMAT, "truncated");
  CHECK_MSG(err_has("needs 536870912 bytes") && err_has("ran out at byte offset 3145740"), "%s", damo_last_error());
  long grew = peak_rss_kib() - before;
  CHECK_MSG(grew < 64 * 1024, "peak memory grew by %ld KiB for a 512 MiB claim", grew);

  /* The chunked path still gives the exact data: 3 MiB in a gzip file loads whole. */
  uint32_t dims3[] = {3, 1u << 20};
  make_idx(big, 2, dims3, (const unsigned char *)"", 0);
  write_gz(gz_part, big, hn + part);
  damo_tensor *t = NULL;
  CHECK_MSG(damo_idx_load(gz_part, &t) == DAMO_OK && t, "%s", damo_last_error());
  int same = t && damo_tensor_numel(t) == (int64_t)part;
  for (size_t i = 0; same && i < part; i++) same = ((const unsigned char *)t->data)[i] == (unsigned char)(i * 7);
  CHECK(same);
  damo_tensor_free(t);
  free(big);
  unlink(plain);
  unlink(gz);
  unlink(gz_part);
}

static void test_idx_load(void) {
  unsigned char data[12], buf[64];
  for (int i = 0; i < 12; i++) data[i] = (unsigned char)(i * 21);
  uint32_t dims[] = {3, 2, 2};
  size_t n = make_idx(buf, 3, dims, data, 12);
  const char *plain = tmp_path("img.idx"), *gz = tmp_path("img.idx.gz");
  write_bytes(plain, buf, n);
  write_gz(gz, buf, n);
  const char *paths[] = {plain, gz};
  for (int k = 0; k < 2; k++) {
    damo_tensor *t = NULL;
    CHECK_MSG(damo_idx_load(paths[k], &t) == DAMO_OK, "%s", damo_last_error());
    if (!t) continue;
    CHECK(t->dtype == DAMO_U8 && t->ndim == 3 && t->shape[0] == 3 && t->shape[1] == 2 && t->shape[2] == 2);
    CHECK(memcmp(t->data, data, 12) == 0);
    damo_tensor_free(t);
  }
  /* Empty data set: shape (0, 2). */
  uint32_t d0[] = {0, 2};
  n = make_idx(buf, 2, d0, data, 0);
  write_bytes(plain, buf, n);
  damo_tensor *t = NULL;
  CHECK(damo_idx_load(plain, &t) == DAMO_OK && t && t->shape[0] == 0);
  damo_tensor_free(t);
}

static void test_idx_errors(void) {
  unsigned char data[2048], buf[2100];
  uint32_t seed = 12345;
  for (int i = 0; i < 2048; i++) {
    seed = seed * 1103515245u + 12345u;
    data[i] = (unsigned char)(seed >> 16) % 16; /* compressible but not trivially */
  }
  uint32_t dims[] = {2, 1024};
  size_t n = make_idx(buf, 2, dims, data, 2048);
  const char *p = tmp_path("bad.idx");

  write_bytes(p, buf, n - 3); /* plain, 3 bytes short */
  expect_idx_fail(p, DAMO_ERR_FORMAT, "truncated");
  /* Bytes needed, and the offset where they ran out: 12 header bytes + 2045 data bytes. */
  CHECK_MSG(err_has("2048") && err_has("offset 2057"), "%s", damo_last_error());

  write_bytes(p, buf, 6); /* cut inside the dimensions */
  expect_idx_fail(p, DAMO_ERR_FORMAT, "dimension");

  unsigned char more[2200];
  memcpy(more, buf, n);
  memcpy(more + n, "xyz", 3);
  write_bytes(p, more, n + 3);
  expect_idx_fail(p, DAMO_ERR_FORMAT, "trailing");

  const char *g = tmp_path("bad.idx.gz");
  write_gz(g, buf, n);
  long gsize = file_size(g);
  CHECK(gsize > 100);
  FILE *f = fopen(g, "rb");
  unsigned char *z0 = malloc((size_t)gsize), *z = malloc((size_t)gsize);
  CHECK(fread(z0, 1, (size_t)gsize, f) == (size_t)gsize);
  fclose(f);
  write_bytes(g, z0, (size_t)gsize / 2); /* gzip cut in half */
  expect_idx_fail(g, DAMO_ERR_FORMAT, "truncated");
  memcpy(z, z0, (size_t)gsize);
  for (long i = gsize / 2 - 8; i < gsize / 2 + 8; i++) z[i] ^= 0x5a; /* garble the deflate stream */
  write_bytes(g, z, (size_t)gsize);
  expect_idx_fail(g, DAMO_ERR_FORMAT, NULL);
  memcpy(z, z0, (size_t)gsize);
  z[gsize - 6] ^= 0xff; /* only the CRC in the trailer is wrong */
  write_bytes(g, z, (size_t)gsize);
  expect_idx_fail(g, DAMO_ERR_FORMAT, "gzip");
  free(z0);
  free(z);

  unsigned char bad_magic[] = {1, 0, 8, 1, 0, 0, 0, 1, 7};
  write_bytes(p, bad_magic, sizeof bad_magic);
  expect_idx_fail(p, DAMO_ERR_FORMAT, "magic");
  unsigned char floats[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0};
  write_bytes(p, floats, sizeof floats);
  expect_idx_fail(p, DAMO_ERR_UNSUPPORTED, "0x0D");
  unsigned char weird[] = {0, 0, 0x42, 1, 0, 0, 0, 1, 7};
  write_bytes(p, weird, sizeof weird);
  expect_idx_fail(p, DAMO_ERR_FORMAT, "0x42");
  unsigned char huge[] = {0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  write_bytes(p, huge, sizeof huge);
  expect_idx_fail(p, DAMO_ERR_FORMAT, "implausibly large");
  write_bytes(p, "", 0);
  expect_idx_fail(p, DAMO_ERR_FORMAT, "truncated");
  expect_idx_fail(tmp_path("missing.idx"), DAMO_ERR_NOT_FOUND, NULL);
}

/* ------------------------------------------------------------------ CSV */

static damo_status csv(const char *text, int header, const char *label, char delim, damo_tensor **x, damo_tensor **y) {
  const char *p = tmp_path("t.csv");
  write_bytes(p, text, strlen(text));
  damo_csv_options o = {header, label, delim};
  return damo_csv_load(p, &o, x, y);
}

static void test_csv_good(void) {
  damo_tensor *x = NULL, *y = NULL;
  const char *text = "\xEF\xBB\xBF"
                     "f1, f2,\"label\",f3\r\n"
                     "1.5,2,0,-3e2\r\n"
                     "\r\n"
                     "  4 , 5.25 ,  2 , \"6\"\n"
                     "   \n"
                     "7,8,1,9"; /* no final newline */
  CHECK_MSG(csv(text, 1, "label", 0, &x, &y) == DAMO_OK, "%s", damo_last_error());
  if (x && y) {
    CHECK(x->dtype == DAMO_F32 && x->ndim == 2 && x->shape[0] == 3 && x->shape[1] == 3);
    CHECK(y->dtype == DAMO_I32 && y->ndim == 1 && y->shape[0] == 3);
    float want[] = {1.5f, 2, -300, 4, 5.25f, 6, 7, 8, 9};
    CHECK_CLOSE(damo_tensor_f32(x), want, 9, 1e-9, 0);
    CHECK(damo_tensor_i32(y)[0] == 0 && damo_tensor_i32(y)[1] == 2 && damo_tensor_i32(y)[2] == 1);
  }
  damo_tensor_free(x);
  damo_tensor_free(y);

  /* Label by position, no header, another delimiter. */
  CHECK(csv("3;1.0;2\n4;5;6\n", 0, "#0", ';', &x, &y) == DAMO_OK);
  if (x && y) {
    CHECK(x->shape[0] == 2 && x->shape[1] == 2 && damo_tensor_f32(x)[3] == 6.0f);
    CHECK(damo_tensor_i32(y)[0] == 3 && damo_tensor_i32(y)[1] == 4);
  }
  damo_tensor_free(x);
  damo_tensor_free(y);

  /* No label column: y stays NULL. */
  y = (damo_tensor *)1;
  CHECK(csv("a,b\n1,2\n", 1, NULL, 0, &x, &y) == DAMO_OK);
  CHECK(y == NULL && x && x->shape[0] == 1 && x->shape[1] == 2);
  damo_tensor_free(x);
}

static void expect_csv_fail(const char *text, int header, const char *label, damo_status want, const char *n1,
                            const char *n2) {
  damo_tensor *x = (damo_tensor *)1, *y = (damo_tensor *)1;
  damo_status s = csv(text, header, label, 0, &x, &y);
  CHECK_MSG(s == want, "got %s (%s)", damo_status_name(s), damo_last_error());
  CHECK(x == NULL && y == NULL);
  CHECK_MSG(err_has(tmp_path("t.csv")), "message does not name the file: %s", damo_last_error());
  if (n1) CHECK_MSG(err_has(n1), "'%s' not in: %s", n1, damo_last_error());
  if (n2) CHECK_MSG(err_has(n2), "'%s' not in: %s", n2, damo_last_error());
}

static void test_csv_errors(void) {
  expect_csv_fail("a,b,y\n1,2,0\n3,abc,1\n", 1, "y", DAMO_ERR_FORMAT, "line 3, column 2", "'abc'");
  expect_csv_fail("a,b,y\n1,2,0\n\n3,4\n", 1, "y", DAMO_ERR_FORMAT, "line 4 has 2 fields", "expected 3");
  expect_csv_fail("a,b,y\n1,2,0\n3,4,1,5\n", 1, "y", DAMO_ERR_FORMAT, "line 3", "expected 3");
  expect_csv_fail("a,b,y\n1,NaN,0\n", 1, "y", DAMO_ERR_FORMAT, "line 2, column 2", "finite");
  expect_csv_fail("1,2\n-inf,0\n", 0, NULL, DAMO_ERR_FORMAT, "line 2, column 1", "finite");
  expect_csv_fail("1,2\n1e999,0\n", 0, NULL, DAMO_ERR_FORMAT, "line 2, column 1", "finite");
  expect_csv_fail("1,2\n1e39,0\n", 0, NULL, DAMO_ERR_FORMAT, "line 2, column 1", "float range");
  expect_csv_fail("a,b,y\r\n1,,0\r\n", 1, "y", DAMO_ERR_FORMAT, "line 2, column 2", "missing");
  expect_csv_fail("a,b,y\n1,2,1.5\n", 1, "y", DAMO_ERR_FORMAT, "line 2, column 3", "integer label");
  expect_csv_fail("a,b,y\n1,2,3\n", 1, "label", DAMO_ERR_NOT_FOUND, "'label'", "a, b, y");
  expect_csv_fail("1,2,3\n", 0, "y", DAMO_ERR_INVALID_ARG, "no header", NULL);
  expect_csv_fail("1,2,3\n", 0, "#3", DAMO_ERR_NOT_FOUND, "#3", NULL);
  expect_csv_fail("1,2,3\n", 0, "#x", DAMO_ERR_INVALID_ARG, "#x", NULL);
  expect_csv_fail("", 0, NULL, DAMO_ERR_FORMAT, "empty", NULL);
  expect_csv_fail("a,b\n\n", 1, NULL, DAMO_ERR_FORMAT, "no data rows", NULL);
  expect_csv_fail("y\n1\n", 1, "y", DAMO_ERR_FORMAT, "no feature columns", NULL);
  damo_tensor *x = NULL;
  CHECK(damo_csv_load(tmp_path("nope.csv"), NULL, &x, NULL) == DAMO_ERR_NOT_FOUND);
}

/* ------------------------------------------------------------------ data sets */

/* A fake fashion-mnist test split under root/fashion-mnist/: n_img images, n_lbl labels. */
static void make_fake_fmnist(const char *root, uint32_t n_img, uint32_t n_lbl, int bad_label, int gz) {
  char dir[640], p[720];
  snprintf(dir, sizeof dir, "%s/fashion-mnist", root);
  mkdir(dir, 0755);
  size_t px = (size_t)n_img * 784;
  unsigned char *img = malloc(px + 64), *lbl = malloc(n_lbl + 64), *pix = malloc(px + 1), *lab = malloc(n_lbl + 1);
  for (size_t i = 0; i < px; i++) pix[i] = (unsigned char)(i % 251);
  for (uint32_t i = 0; i < n_lbl; i++) lab[i] = (unsigned char)(i % 10);
  if (bad_label && n_lbl) lab[n_lbl - 1] = 10;
  uint32_t di[] = {n_img, 28, 28}, dl[] = {n_lbl};
  size_t ni = make_idx(img, 3, di, pix, px), nl = make_idx(lbl, 1, dl, lab, n_lbl);
  snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte%s", dir, gz ? ".gz" : "");
  gz ? write_gz(p, img, ni) : write_bytes(p, img, ni);
  snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte%s", dir, gz ? ".gz" : "");
  gz ? write_gz(p, lbl, nl) : write_bytes(p, lbl, nl);
  free(img);
  free(lbl);
  free(pix);
  free(lab);
}

static void test_dataset_fake(void) {
  char root[600];
  snprintf(root, sizeof root, "%s/data", tmpdir);
  mkdir(root, 0755);
  setenv("DAMO_DATA_DIR", root, 1);
  setenv("DAMO_SYSTEM_DATA_DIR", root, 1);
  damo_tensor *x = NULL, *y = NULL;
  for (int gz = 0; gz < 2; gz++) {
    remove_tree(root, 0);
    make_fake_fmnist(root, 4, 4, 0, gz);
    CHECK_MSG(damo_dataset_load("fashion-mnist", "test", &x, &y) == DAMO_OK, "%s", damo_last_error());
    if (x && y) {
      CHECK(x->dtype == DAMO_U8 && x->ndim == 3 && x->shape[0] == 4 && x->shape[1] == 28 && x->shape[2] == 28);
      CHECK(y->dtype == DAMO_I32 && y->ndim == 1 && y->shape[0] == 4);
      CHECK(((const uint8_t *)x->data)[300] == 300 % 251 && damo_tensor_i32(y)[3] == 3);
    }
    damo_tensor_free(x);
    damo_tensor_free(y);
    x = y = NULL;
  }
  remove_tree(root, 0);
  make_fake_fmnist(root, 4, 3, 0, 1);
  CHECK(damo_dataset_load("fashion-mnist", "test", &x, &y) == DAMO_ERR_FORMAT && !x && !y);
  CHECK_MSG(err_has("4 images") && err_has("3 labels"), "%s", damo_last_error());
  remove_tree(root, 0);
  make_fake_fmnist(root, 3, 3, 1, 1);
  CHECK(damo_dataset_load("fashion-mnist", "test", &x, &y) == DAMO_ERR_FORMAT && !x && !y);
  CHECK_MSG(err_has("label 10 at index 2"), "%s", damo_last_error());

  /* The train split is not in the fake copy: NOT_FOUND naming the paths and the fix. */
  CHECK(damo_dataset_load("fashion-mnist", "train", &x, &y) == DAMO_ERR_NOT_FOUND);
  CHECK_MSG(err_has("train-images-idx3-ubyte[.gz]") && err_has(root), "%s", damo_last_error());
  CHECK_MSG(err_has("apt-get install dataset-fashion-mnist, or set DAMO_DATA_DIR"), "%s", damo_last_error());
  remove_tree(root, 0);
  CHECK(damo_dataset_load("fashion-mnist", "test", &x, &y) == DAMO_ERR_NOT_FOUND);
  CHECK_MSG(err_has("apt-get install dataset-fashion-mnist"), "%s", damo_last_error());

  CHECK(damo_dataset_load("cifar-1000", "test", &x, &y) == DAMO_ERR_NOT_FOUND);
  CHECK_MSG(err_has("cifar-1000") && err_has("known: fashion-mnist"), "%s", damo_last_error());
  CHECK(damo_dataset_load("fashion-mnist", "validation", &x, &y) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(err_has("validation"), "%s", damo_last_error());
  unsetenv("DAMO_SYSTEM_DATA_DIR");
}

static void test_dataset_real(void) {
  damo_tensor *x = NULL, *y = NULL;
  unsetenv("DAMO_SYSTEM_DATA_DIR"); /* the caller's DAMO_DATA_DIR, if any, is back in force */
  damo_status s = damo_dataset_load("fashion-mnist", "test", &x, &y);
  if (s == DAMO_ERR_NOT_FOUND) {
    fprintf(stderr, "  (fashion-mnist is not installed: checked only the error)\n");
    CHECK_MSG(err_has("apt-get install dataset-fashion-mnist"), "%s", damo_last_error());
    return;
  }
  CHECK_MSG(s == DAMO_OK, "%s", damo_last_error());
  if (!x || !y) return;
  CHECK(x->ndim == 3 && x->shape[0] == 10000 && x->shape[1] == 28 && x->shape[2] == 28);
  CHECK(y->ndim == 1 && y->shape[0] == 10000);
  CHECK(damo_check_labels(y, 10, "fashion-mnist test labels") == DAMO_OK);
  int counts[10] = {0};
  for (int i = 0; i < 10000; i++)
    if (damo_tensor_i32(y)[i] >= 0 && damo_tensor_i32(y)[i] < 10) counts[damo_tensor_i32(y)[i]]++;
  for (int c = 0; c < 10; c++) CHECK(counts[c] == 1000); /* the test split is balanced */
  double sum = 0, mx = 0;
  for (int64_t i = 0; i < damo_tensor_numel(x); i++) {
    sum += ((const uint8_t *)x->data)[i];
    if (((const uint8_t *)x->data)[i] > mx) mx = ((const uint8_t *)x->data)[i];
  }
  double mean = sum / (double)damo_tensor_numel(x);
  CHECK_MSG(mean > 60 && mean < 90, "mean pixel %.2f", mean);
  CHECK(mx == 255);
  damo_tensor_free(x);
  damo_tensor_free(y);
}

/* ------------------------------------------------------------------ preprocessing */

static void test_preprocess(void) {
  int64_t s32[] = {4, 3};
  damo_tensor *x = damo_tensor_new(DAMO_F32, 2, s32);
  float vals[] = {1, 5, 100, 2, 5, 200, 3, 5, 300, 4, 5, 400};
  memcpy(x->data, vals, sizeof vals);
  damo_scale(x, 2.0f);
  CHECK(damo_tensor_f32(x)[11] == 800.0f);
  damo_scale(x, 0.5f);

  damo_tensor *mean = NULL, *std = NULL;
  CHECK(damo_standardize_fit(x, &mean, &std) == DAMO_OK);
  CHECK(mean && std && mean->ndim == 1 && mean->shape[0] == 3 && std->shape[0] == 3);
  if (!mean || !std) return;
  CHECK_NEAR(damo_tensor_f32(mean)[0], 2.5, 1e-6);
  CHECK_NEAR(damo_tensor_f32(std)[0], sqrt(1.25), 1e-6);
  CHECK_NEAR(damo_tensor_f32(std)[1], 1e-7, 1e-12); /* constant feature: the floor */
  CHECK(damo_standardize_apply(x, mean, std) == DAMO_OK);
  double m0 = 0, v0 = 0;
  for (int r = 0; r < 4; r++) {
    m0 += damo_tensor_f32(x)[r * 3 + 2] / 4.0;
    v0 += damo_tensor_f32(x)[r * 3 + 2] * damo_tensor_f32(x)[r * 3 + 2] / 4.0;
    CHECK(damo_tensor_f32(x)[r * 3 + 1] == 0.0f);
  }
  CHECK_NEAR(m0, 0, 1e-6);
  CHECK_NEAR(v0, 1, 1e-5);

  int64_t s4[] = {4}, s22[] = {2, 2};
  damo_tensor *wrong = damo_tensor_new(DAMO_F32, 1, s4);
  CHECK(damo_standardize_apply(x, wrong, std) == DAMO_ERR_SHAPE);
  CHECK_MSG(err_has("(4,)") && err_has("(3,)"), "%s", damo_last_error());
  damo_tensor_f32(std)[2] = 0;
  CHECK(damo_standardize_apply(x, mean, std) == DAMO_ERR_NUMERIC);
  damo_tensor_free(wrong);
  damo_tensor_free(mean);
  damo_tensor_free(std);

  damo_tensor *img = damo_tensor_new(DAMO_F32, 3, (int64_t[]){2, 2, 2});
  CHECK(damo_standardize_fit(img, &mean, &std) == DAMO_OK && mean && mean->ndim == 2 && mean->shape[1] == 2);
  damo_tensor_free(mean);
  damo_tensor_free(std);
  damo_tensor_free(img);

  damo_tensor *y = damo_tensor_new(DAMO_I32, 1, s4);
  int32_t labels[] = {0, 9, -1, 10};
  memcpy(y->data, labels, sizeof labels);
  CHECK(damo_check_labels(y, 10, "train labels") == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(err_has("train labels") && err_has("-1") && err_has("index 2"), "%s", damo_last_error());
  damo_tensor_i32(y)[2] = 3;
  CHECK(damo_check_labels(y, 10, "train labels") == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(err_has("10") && err_has("index 3"), "%s", damo_last_error());
  damo_tensor_i32(y)[3] = 3;
  CHECK(damo_check_labels(y, 10, "train labels") == DAMO_OK);
  damo_tensor_free(y);

  CHECK(damo_check_finite(x, "x") == DAMO_OK);
  damo_tensor_f32(x)[5] = NAN;
  CHECK(damo_check_finite(x, "features") == DAMO_ERR_NUMERIC);
  CHECK_MSG(err_has("features") && err_has("NaN") && err_has("index 5") && err_has("(1, 2)"), "%s", damo_last_error());
  damo_tensor_free(x);
  damo_tensor *v = damo_tensor_new(DAMO_F32, 2, s22);
  damo_tensor_f32(v)[0] = -INFINITY;
  CHECK(damo_check_finite(v, "v") == DAMO_ERR_NUMERIC && err_has("Inf at index 0"));
  damo_tensor_free(v);
  damo_tensor *empty = damo_tensor_new(DAMO_F32, 2, (int64_t[]){0, 3});
  CHECK(damo_standardize_fit(empty, &mean, &std) == DAMO_ERR_SHAPE && !mean && !std);
  damo_tensor_free(empty);
}

int main(void) {
  tmpdir_template("data");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  const char *orig = getenv("DAMO_DATA_DIR");
  char *saved = orig ? strdup(orig) : NULL;
  RUN(test_idx_load);
  RUN(test_idx_errors);
  RUN(test_idx_huge_header);
  RUN(test_csv_good);
  RUN(test_csv_errors);
  RUN(test_dataset_fake);
  if (saved)
    setenv("DAMO_DATA_DIR", saved, 1);
  else
    unsetenv("DAMO_DATA_DIR");
  free(saved);
  RUN(test_dataset_real);
  RUN(test_preprocess);
  remove_tree(tmpdir, 1);
  return test_summary("data");
}
