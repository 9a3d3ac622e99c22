/* test_io.c - file formats: atomic writes, .npy (round trips, files numpy wrote, and every
 * kind of broken file), safetensors (round trips, dtype conversions, and hand-made bad
 * headers that must fail with DAMO_ERR_FORMAT naming the file). Temporary files live in a
 * mkdtemp directory that is removed at the end. */
#include "damo.h"
#include "harness.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef DAMO_SOURCE_DIR
#define DAMO_SOURCE_DIR "."
#endif
#define FIXTURES DAMO_SOURCE_DIR "/tests/fixtures/npy/"

#include "tmpfiles.h"

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static unsigned char *read_all(const char *path, long *n) {
  *n = file_size(path);
  if (*n < 0) return NULL;
  unsigned char *b = malloc((size_t)*n + 1);
  FILE *f = fopen(path, "rb");
  if (!f || !b) {
    if (f) fclose(f);
    free(b);
    return NULL;
  }
  size_t got = fread(b, 1, (size_t)*n, f);
  fclose(f);
  if ((long)got != *n) {
    free(b);
    return NULL;
  }
  return b;
}

static int count_dir_entries(void) {
  DIR *d = opendir(tmpdir);
  int n = 0;
  if (!d) return -1;
  for (struct dirent *e; (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void clean_tmpdir(int remove_dir) {
  DIR *d = opendir(tmpdir);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(tmp_path(e->d_name));
  closedir(d);
  if (remove_dir) rmdir(tmpdir);
}

static int err_has(const char *s) { return strstr(damo_last_error(), s) != NULL; }

/* ------------------------------------------------------------------ atomic writes */

static void test_atomic_write(void) {
  clean_tmpdir(0);
  const char *p = tmp_path("a.bin");
  CHECK(damo_write_file_atomic(p, "hello", 5) == DAMO_OK);
  CHECK(damo_write_file_atomic(p, "hi", 2) == DAMO_OK); /* replaces */
  long n;
  unsigned char *b = read_all(p, &n);
  CHECK(b && n == 2 && memcmp(b, "hi", 2) == 0);
  free(b);
  CHECK(count_dir_entries() == 1); /* no temporary file left behind */
  CHECK(damo_write_file_atomic(tmp_path("empty.bin"), NULL, 0) == DAMO_OK);
  CHECK(file_size(tmp_path("empty.bin")) == 0);

  const char *bad = tmp_path("no/such/dir/x.bin");
  CHECK(damo_write_file_atomic(bad, "x", 1) == DAMO_ERR_IO);
  CHECK_MSG(err_has(bad), "%s", damo_last_error());
  CHECK(count_dir_entries() == 2);
}

/* ------------------------------------------------------------------ npy */

static int same_tensor(const damo_tensor *a, const damo_tensor *b) {
  if (!a || !b || a->dtype != b->dtype || a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return memcmp(a->data, b->data, damo_tensor_nbytes(a)) == 0;
}

static void roundtrip_npy(damo_tensor *t, const char *name) {
  const char *p = tmp_path(name);
  damo_tensor *u = NULL;
  CHECK(damo_npy_save(p, t) == DAMO_OK);
  CHECK_MSG(damo_npy_load(p, &u) == DAMO_OK, "%s", damo_last_error());
  CHECK_MSG(same_tensor(t, u), "%s differs after a round trip", name);
  /* numpy's layout: a 64-byte-aligned header before the data. */
  CHECK((file_size(p) - (long)damo_tensor_nbytes(t)) % 64 == 0);
  damo_tensor_free(u);
}

static void test_npy_roundtrip(void) {
  clean_tmpdir(0);
  int64_t s23[] = {2, 3}, s4[] = {4}, s222[] = {2, 2, 2}, s05[] = {0, 5};
  damo_tensor *f = damo_tensor_new(DAMO_F32, 2, s23);
  for (int i = 0; i < 6; i++) damo_tensor_f32(f)[i] = (float)i * 0.25f - 1.0f;
  roundtrip_npy(f, "f.npy");
  damo_tensor *iv = damo_tensor_new(DAMO_I32, 1, s4);
  int32_t ivals[] = {-2147483647 - 1, -1, 0, 2147483647};
  memcpy(iv->data, ivals, sizeof ivals);
  roundtrip_npy(iv, "i.npy");
  damo_tensor *u = damo_tensor_new(DAMO_U8, 3, s222);
  for (int i = 0; i < 8; i++) ((uint8_t *)u->data)[i] = (uint8_t)(i * 37);
  roundtrip_npy(u, "u.npy");
  damo_tensor *sc = damo_tensor_new(DAMO_F32, 0, NULL);
  damo_tensor_f32(sc)[0] = 42.5f;
  roundtrip_npy(sc, "scalar.npy");
  damo_tensor *e = damo_tensor_new(DAMO_F32, 2, s05);
  roundtrip_npy(e, "empty.npy");
  damo_tensor_free(f);
  damo_tensor_free(iv);
  damo_tensor_free(u);
  damo_tensor_free(sc);
  damo_tensor_free(e);
  CHECK(count_dir_entries() == 5);
}

static damo_tensor *load_fixture(const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s%s", FIXTURES, name);
  damo_tensor *t = NULL;
  damo_status s = damo_npy_load(p, &t);
  CHECK_MSG(s == DAMO_OK, "%s: %s", name, damo_last_error());
  return t;
}

static void check_values(const damo_tensor *t, damo_dtype dt, int ndim, const int64_t *shape, const double *want) {
  if (!t) return;
  CHECK(t->dtype == dt && t->ndim == ndim);
  if (t->dtype != dt || t->ndim != ndim) return;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    CHECK(t->shape[i] == shape[i]);
    n *= shape[i];
  }
  for (int64_t i = 0; i < n; i++) {
    /* Each branch cast to double: a bare ?: would convert the integers through float. */
    double v = dt == DAMO_F32   ? (double)damo_tensor_f32(t)[i]
               : dt == DAMO_I32 ? (double)damo_tensor_i32(t)[i]
                                : (double)((const uint8_t *)t->data)[i];
    double w = dt == DAMO_F32 ? (double)(float)want[i] : want[i];
    CHECK_NEAR(v, w, 0);
  }
}

static void test_npy_numpy_fixtures(void) {
  struct {
    const char *file;
    damo_dtype dt;
    int ndim;
    int64_t shape[2];
    double want[6];
  } cases[] = {
      {"f4_2x3.npy", DAMO_F32, 2, {2, 3}, {-1, -0.5f, 0, 0.5f, 1, 1.5f}},
      {"f8_3.npy", DAMO_F32, 1, {3}, {1.5f, -2.25f, 1e10f}},
      {"f2_3.npy", DAMO_F32, 1, {3}, {0.5f, -2, 65504}},
      {"f4_be_2.npy", DAMO_F32, 1, {2}, {1.5f, -3}},
      {"i1_3.npy", DAMO_I32, 1, {3}, {-128, 0, 127}},
      {"i2_be_3.npy", DAMO_I32, 1, {3}, {-2, 300, 7}},
      {"u2_2.npy", DAMO_I32, 1, {2}, {65535, 1}},
      {"i8_4.npy", DAMO_I32, 1, {4}, {-3, 0, 7, 2147483647}},
      {"u1_2x2.npy", DAMO_U8, 2, {2, 2}, {0, 255, 1, 128}},
      {"b1_3.npy", DAMO_I32, 1, {3}, {1, 0, 1}},
      {"scalar_f4.npy", DAMO_F32, 0, {0}, {3.25f}},
      {"empty_f4_0x3.npy", DAMO_F32, 2, {0, 3}, {0}},
      {"v2_f4_2.npy", DAMO_F32, 1, {2}, {1, 2}},
      {"v3_i4_2.npy", DAMO_I32, 1, {2}, {-5, 6}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    damo_tensor *t = load_fixture(cases[i].file);
    check_values(t, cases[i].dt, cases[i].ndim, cases[i].shape, cases[i].want);
    damo_tensor_free(t);
  }
}

static void expect_npy_fail(const char *path, damo_status want, const char *needle) {
  damo_tensor *t = (damo_tensor *)1;
  damo_status s = damo_npy_load(path, &t);
  CHECK_MSG(s == want, "%s: got %s (%s)", path, damo_status_name(s), damo_last_error());
  CHECK(t == NULL);
  CHECK_MSG(err_has(path), "message does not name the file: %s", damo_last_error());
  if (needle) CHECK_MSG(err_has(needle), "'%s' not in: %s", needle, damo_last_error());
}

static void test_npy_rejects(void) {
  clean_tmpdir(0);
  expect_npy_fail(FIXTURES "fortran_f4_2x2.npy", DAMO_ERR_UNSUPPORTED, "fortran_order");
  expect_npy_fail(FIXTURES "i8_overflow.npy", DAMO_ERR_UNSUPPORTED, "index 1");
  expect_npy_fail(FIXTURES "u4_overflow.npy", DAMO_ERR_UNSUPPORTED, "4000000000");
  expect_npy_fail(FIXTURES "f8_overflow.npy", DAMO_ERR_UNSUPPORTED, "f32");
  expect_npy_fail(FIXTURES "c8_2.npy", DAMO_ERR_UNSUPPORTED, "<c8");
  expect_npy_fail(tmp_path("missing.npy"), DAMO_ERR_NOT_FOUND, NULL);

  /* Truncated: 40 bytes of data promised, 32 present. */
  int64_t s10[] = {10};
  damo_tensor *t = damo_tensor_new(DAMO_F32, 1, s10);
  const char *p = tmp_path("trunc.npy");
  CHECK(damo_npy_save(p, t) == DAMO_OK);
  CHECK(truncate(p, file_size(p) - 8) == 0);
  expect_npy_fail(p, DAMO_ERR_FORMAT, "truncated");
  CHECK_MSG(err_has("40") && err_has("32"), "%s", damo_last_error());
  /* Issue 18.6: a header claiming 2^40 floats in a 128-byte file fails on the size, before
   * any allocation (not out of memory). */
  char hostile[128];
  memcpy(hostile, "\x93NUMPY\x01\x00\x76\x00", 10);
  int hn = snprintf(hostile + 10, sizeof hostile - 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576), }");
  memset(hostile + 10 + hn, ' ', (size_t)(117 - hn));
  hostile[127] = '\n';
  const char *hp = tmp_path("hostile.npy");
  write_bytes(hp, hostile, sizeof hostile);
  expect_npy_fail(hp, DAMO_ERR_FORMAT, "truncated");
  CHECK_MSG(err_has("needs 4398046511104 bytes of data but the file holds 0"), "%s", damo_last_error());
  unlink(hp);
  /* Cut inside the header. */
  CHECK(truncate(p, 40) == 0);
  expect_npy_fail(p, DAMO_ERR_FORMAT, "truncated");

  /* Trailing bytes after the data. */
  p = tmp_path("long.npy");
  CHECK(damo_npy_save(p, t) == DAMO_OK);
  FILE *f = fopen(p, "ab");
  fputs("junk", f);
  fclose(f);
  expect_npy_fail(p, DAMO_ERR_FORMAT, "44");
  damo_tensor_free(t);

  p = tmp_path("magic.npy");
  write_bytes(p, "\x93NUMPZ\x01\x00\x10\x00{}              ", 26);
  expect_npy_fail(p, DAMO_ERR_FORMAT, "magic");
  p = tmp_path("short.npy");
  write_bytes(p, "\x93NUM", 4);
  expect_npy_fail(p, DAMO_ERR_FORMAT, "too short");

  /* Header dicts that are not what numpy writes. */
  const char *headers[][2] = {
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1, }", "unexpected key 'extra'"},
      {"{'descr': '<f4', 'fortran_order': False, }", "lacks 'shape'"},
      {"{'descr': '<f4', 'fortran_order': Nope, 'shape': (2,), }", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }", "non-negative integer"},
      {"{'descr': '<q9', 'fortran_order': False, 'shape': (2,), }", "<q9"},
      {"['descr', '<f4']", "expected '{'"},
  };
  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
    unsigned char buf[256];
    size_t hl = strlen(headers[i][0]);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hl + 1);
    buf[9] = 0;
    memcpy(buf + 10, headers[i][0], hl);
    buf[10 + hl] = '\n';
    memset(buf + 11 + hl, 0, 8);
    p = tmp_path("hdr.npy");
    write_bytes(p, buf, 11 + hl + 8);
    damo_tensor *u = NULL;
    damo_status s = damo_npy_load(p, &u);
    CHECK_MSG(s == DAMO_ERR_FORMAT || s == DAMO_ERR_UNSUPPORTED, "case %zu: %s", i, damo_status_name(s));
    CHECK_MSG(err_has(p) && err_has(headers[i][1]), "case %zu: '%s' not in: %s", i, headers[i][1], damo_last_error());
    damo_tensor_free(u);
  }
}

/* ------------------------------------------------------------------ safetensors */

static void test_safetensors_roundtrip(void) {
  clean_tmpdir(0);
  damo_tensor_dict *d = damo_tensor_dict_new();
  int64_t s34[] = {3, 4}, s4[] = {4}, s5[] = {5};
  damo_tensor *k = damo_tensor_new(DAMO_F32, 2, s34), *b = damo_tensor_new(DAMO_F32, 1, s4);
  damo_tensor *m = damo_tensor_new(DAMO_U8, 1, s5), *st = damo_tensor_new(DAMO_I32, 0, NULL);
  for (int i = 0; i < 12; i++) damo_tensor_f32(k)[i] = (float)i / 3.0f - 2.0f;
  for (int i = 0; i < 4; i++) damo_tensor_f32(b)[i] = (float)-i;
  for (int i = 0; i < 5; i++) ((uint8_t *)m->data)[i] = (uint8_t)(250 + i);
  damo_tensor_i32(st)[0] = -123456;
  /* Added out of name order, with the odd-sized U8 first, to exercise sorting and alignment. */
  CHECK(damo_tensor_dict_add(d, "mask", m) == DAMO_OK);
  CHECK(damo_tensor_dict_add(d, "dense_1.kernel", k) == DAMO_OK);
  CHECK(damo_tensor_dict_add(d, "step", st) == DAMO_OK);
  CHECK(damo_tensor_dict_add(d, "dense_1.bias", b) == DAMO_OK);
  const char *meta[] = {"format", "pt", "quote\"d", "line\nbreak"};
  const char *p = tmp_path("model.safetensors");
  CHECK_MSG(damo_safetensors_save(p, d, meta, 2) == DAMO_OK, "%s", damo_last_error());

  damo_tensor_dict *r = NULL;
  CHECK_MSG(damo_safetensors_load(p, &r) == DAMO_OK, "%s", damo_last_error());
  CHECK(r && r->count == 4);
  for (int i = 0; r && i < d->count; i++)
    CHECK_MSG(same_tensor(d->tensors[i], damo_tensor_dict_get(r, d->names[i])), "%s differs", d->names[i]);
  damo_tensor_dict_free(r);

  /* Layout: padded header, keys sorted by name after __metadata__, 4-byte dtypes aligned,
   * tensors packed with no gaps up to the end of the file. */
  long n;
  unsigned char *raw = read_all(p, &n);
  CHECK(raw && n > 8);
  if (raw) {
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)raw[i] << (8 * i);
    CHECK(hl % 8 == 0);
    char *h = malloc(hl + 1);
    memcpy(h, raw + 8, hl);
    h[hl] = '\0';
    const char *pm = strstr(h, "__metadata__"), *pb = strstr(h, "dense_1.bias"), *pk = strstr(h, "dense_1.kernel");
    const char *pmask = strstr(h, "\"mask\""), *ps = strstr(h, "\"step\"");
    CHECK(pm && pb && pk && pmask && ps && pm < pb && pb < pk && pk < pmask && pmask < ps);
    cJSON *j = cJSON_Parse(h);
    CHECK(j != NULL);
    uint64_t total = 0;
    for (cJSON *e = j ? j->child : NULL; e; e = e->next) {
      if (strcmp(e->string, "__metadata__") == 0) {
        CHECK(strcmp(cJSON_GetObjectItem(e, "quote\"d")->valuestring, "line\nbreak") == 0);
        continue;
      }
      cJSON *off = cJSON_GetObjectItem(e, "data_offsets");
      double begin = cJSON_GetArrayItem(off, 0)->valuedouble, end = cJSON_GetArrayItem(off, 1)->valuedouble;
      const char *dt = cJSON_GetObjectItem(e, "dtype")->valuestring;
      if (strcmp(dt, "U8") != 0) CHECK(fmod(begin, 4) == 0);
      total += (uint64_t)(end - begin);
    }
    CHECK(total == (uint64_t)n - 8 - hl);
    cJSON_Delete(j);
    free(h);
  }
  free(raw);
  damo_tensor_dict_free(d);

  /* An empty dict is a valid file too. */
  d = damo_tensor_dict_new();
  CHECK(damo_safetensors_save(tmp_path("empty.safetensors"), d, NULL, 0) == DAMO_OK);
  CHECK(damo_safetensors_load(tmp_path("empty.safetensors"), &r) == DAMO_OK && r && r->count == 0);
  damo_tensor_dict_free(r);
  damo_tensor_dict_free(d);
  CHECK(count_dir_entries() == 2);
}

/* Writes a safetensors file from a JSON header and a data section. hlen_override != 0
 * replaces the length field. */
static void write_st(const char *path, const char *json, const void *data, size_t dlen, uint64_t hlen_override) {
  size_t hl = strlen(json);
  unsigned char *buf = malloc(8 + hl + dlen + 1);
  uint64_t v = hlen_override ? hlen_override : hl;
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(v >> (8 * i));
  memcpy(buf + 8, json, hl);
  if (dlen) memcpy(buf + 8 + hl, data, dlen);
  write_bytes(path, buf, 8 + hl + dlen);
  free(buf);
}

static void test_safetensors_conversions(void) {
  clean_tmpdir(0);
  unsigned char data[64];
  size_t o = 0;
  const uint16_t f16[] = {0x3C00, 0xC000, 0x0001, 0x7C00}; /* 1, -2, smallest subnormal, inf */
  for (int i = 0; i < 4; i++, o += 2) data[o] = f16[i] & 0xff, data[o + 1] = (unsigned char)(f16[i] >> 8);
  const uint16_t bf16[] = {0x3FC0, 0xC120}; /* 1.5, -10 */
  for (int i = 0; i < 2; i++, o += 2) data[o] = bf16[i] & 0xff, data[o + 1] = (unsigned char)(bf16[i] >> 8);
  const int64_t i64[] = {-5, 2147483647};
  for (int i = 0; i < 2; i++, o += 8)
    for (int b = 0; b < 8; b++) data[o + b] = (unsigned char)((uint64_t)i64[i] >> (8 * b));
  double f64 = 0.25;
  uint64_t bits;
  memcpy(&bits, &f64, 8);
  for (int b = 0; b < 8; b++) data[o + b] = (unsigned char)(bits >> (8 * b));
  o += 8;
  const char *json = "{\"__metadata__\":{\"a\":\"b\"},\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]},"
                     "\"l\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[12,28]},"
                     "\"d\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[28,36]},"
                     "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[36,36]}}   ";
  const char *p = tmp_path("conv.safetensors");
  write_st(p, json, data, o, 0);
  damo_tensor_dict *d = NULL;
  CHECK_MSG(damo_safetensors_load(p, &d) == DAMO_OK, "%s", damo_last_error());
  if (!d) return;
  damo_tensor *h = damo_tensor_dict_get(d, "h"), *b = damo_tensor_dict_get(d, "b"), *l = damo_tensor_dict_get(d, "l");
  damo_tensor *dd = damo_tensor_dict_get(d, "d"), *z = damo_tensor_dict_get(d, "z");
  CHECK(h && h->dtype == DAMO_F32 && h->ndim == 2 && b && b->dtype == DAMO_F32 && l && l->dtype == DAMO_I32);
  CHECK(dd && dd->ndim == 0 && z && z->ndim == 2 && z->shape[0] == 0);
  if (h && b && l && dd) {
    CHECK(damo_tensor_f32(h)[0] == 1.0f && damo_tensor_f32(h)[1] == -2.0f);
    CHECK(damo_tensor_f32(h)[2] == ldexpf(1.0f, -24) && isinf(damo_tensor_f32(h)[3]));
    CHECK(damo_tensor_f32(b)[0] == 1.5f && damo_tensor_f32(b)[1] == -10.0f);
    CHECK(damo_tensor_i32(l)[0] == -5 && damo_tensor_i32(l)[1] == 2147483647);
    CHECK(damo_tensor_f32(dd)[0] == 0.25f);
  }
  damo_tensor_dict_free(d);
}

static void expect_st_fail(const char *path, damo_status want, const char *needle) {
  damo_tensor_dict *d = (damo_tensor_dict *)1;
  damo_status s = damo_safetensors_load(path, &d);
  CHECK_MSG(s == want, "got %s (%s)", damo_status_name(s), damo_last_error());
  CHECK(d == NULL);
  CHECK_MSG(err_has(path), "message does not name the file: %s", damo_last_error());
  if (needle) CHECK_MSG(err_has(needle), "'%s' not in: %s", needle, damo_last_error());
}

static void test_safetensors_bad(void) {
  clean_tmpdir(0);
  unsigned char zeros[64] = {0};
  const char *p = tmp_path("bad.safetensors");
  struct {
    const char *json;
    size_t dlen;
    damo_status want;
    const char *needle;
  } cases[] = {
      {"{\"dense_1.kernel\":{\"dtype\":\"F32\",\"shape\":[1000],\"data_offsets\":[0,4000]}}", 30, DAMO_ERR_FORMAT,
       "tensor 'dense_1.kernel' data_offsets [0, 4000] out of range of the 30-byte data section"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, DAMO_ERR_FORMAT, "overlap"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
       "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 16, DAMO_ERR_FORMAT, "overlap"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, DAMO_ERR_FORMAT, "needs 12 bytes"},
      {"{\"w\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, DAMO_ERR_FORMAT, "unknown dtype 'Q7'"},
      {"{\"w\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, DAMO_ERR_UNSUPPORTED, "BOOL"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, DAMO_ERR_FORMAT, "shape entry 0"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, DAMO_ERR_FORMAT, "shape entry 0"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, DAMO_ERR_FORMAT, "out of range"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, DAMO_ERR_FORMAT, "data_offsets"},
      {"{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DAMO_ERR_FORMAT, "dtype"},
      {"{\"w\":[1,2]}", 0, DAMO_ERR_FORMAT, "expected an object"},
      {"{\"__metadata__\":{\"k\":1}}", 0, DAMO_ERR_FORMAT, "__metadata__"},
      {"{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
       "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, DAMO_ERR_FORMAT,
       "JSON header: duplicate key \"w\" at byte offset 61"},
      {"{this is not json}      ", 0, DAMO_ERR_FORMAT, "not valid JSON"},
      {"[1, 2, 3]", 0, DAMO_ERR_FORMAT, "not a JSON object"},
      {"{} garbage", 0, DAMO_ERR_FORMAT, "after the JSON"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_st(p, cases[i].json, zeros, cases[i].dlen, 0);
    expect_st_fail(p, cases[i].want, cases[i].needle);
  }

  /* I64 values outside the i32 range. */
  unsigned char big[8] = {0, 0, 0, 0, 1, 0, 0, 0};
  write_st(p, "{\"n\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", big, 8, 0);
  expect_st_fail(p, DAMO_ERR_UNSUPPORTED, "4294967296");

  /* Header length larger than the file; file shorter than the length field. */
  write_st(p, "{}", NULL, 0, 1000);
  expect_st_fail(p, DAMO_ERR_FORMAT, "header length 1000");
  write_bytes(p, "\x02\x00\x00", 3);
  expect_st_fail(p, DAMO_ERR_FORMAT, "too short");

  /* A real file cut short: the last tensor's offsets now run past the data. */
  damo_tensor_dict *d = damo_tensor_dict_new();
  int64_t s8[] = {8};
  damo_tensor_dict_add(d, "w", damo_tensor_new(DAMO_F32, 1, s8));
  CHECK(damo_safetensors_save(p, d, NULL, 0) == DAMO_OK);
  damo_tensor_dict_free(d);
  CHECK(truncate(p, file_size(p) - 5) == 0);
  expect_st_fail(p, DAMO_ERR_FORMAT, "out of range of the 27-byte data section");
  expect_st_fail(tmp_path("nope.safetensors"), DAMO_ERR_NOT_FOUND, NULL);
}

/* Issue 18.5: the one strict JSON reader (damo_json_parse) behind every JSON file. */
static void expect_json_error(const char *text, const char *needle1, const char *needle2) {
  struct cJSON *root = (struct cJSON *)1;
  damo_status st = damo_json_parse(text, strlen(text), "x.json", 0, &root);
  const char *e = damo_last_error();
  CHECK_MSG(st == DAMO_ERR_FORMAT && root == NULL, "%s: %s (%s)", text, damo_status_name(st), e);
  CHECK_MSG(strstr(e, "x.json: ") == e && strstr(e, needle1) && (!needle2 || strstr(e, needle2)),
            "%s: message \"%s\" lacks \"%s\" / \"%s\"", text, e, needle1, needle2 ? needle2 : "");
}

static void test_json_strict(void) {
  const char *good = "\xEF\xBB\xBF {\"a\": {\"b\": 1, \"c\": [1, {\"d\": \"}\\\"{\", \"e\": null}]},\n"
                     " \"q\\\"k\": {\"a\": true, \"b\": -1.5e3}, \"\": 0} \n\t";
  struct cJSON *root = NULL;
  CHECK_MSG(damo_json_parse(good, strlen(good), "x.json", 0, &root) == DAMO_OK && root, "%s", damo_last_error());
  CHECK(cJSON_GetObjectItemCaseSensitive(root, "q\"k") != NULL);
  cJSON_Delete(root);
  /* the second "a" starts at byte 7; the first at byte 1 */
  expect_json_error("{\"a\":1,\"a\":2}", "duplicate key \"a\" at byte offset 7 (line 1)", "first given at byte offset 1");
  /* at any depth, and spelt differently ("\u0061" is "a"); a repeat in another object is fine */
  expect_json_error("{\"a\":{\"k\":1},\n \"x\": [ {\"k\": 1, \"\\u006b\": 2} ]}", "duplicate key \"k\" at byte offset 31",
                    "line 2");
  expect_json_error("{\"\":1, \"\":2}", "duplicate key \"\" at byte offset 7", NULL);
  /* the earliest repeat in the text is the one named */
  expect_json_error("{\"z\":1,\"y\":{\"b\":1,\"b\":2},\"z\":3}", "duplicate key \"b\" at byte offset 18", NULL);
  expect_json_error("{\"a\":1} x", "unexpected data after the JSON value at byte offset 8", "expected the end");
  expect_json_error("{\"a\":1}\n{\"a\":1}", "after the JSON value at byte offset 8 (line 2)", NULL);
  expect_json_error("{\"a\": tru}", "not valid JSON at byte offset", "line 1");
  expect_json_error("{\"a\": 1,\n\"b\" 2}", "not valid JSON at byte offset", "line 2");
  expect_json_error(" \n ", "empty, expected a JSON value", NULL);
  /* a NUL inside the given length is not white space */
  root = NULL;
  CHECK(damo_json_parse("{}\0{}", 5, "x.json", 0, &root) == DAMO_ERR_FORMAT && !root);
  /* leniency on duplicates only when asked for: cJSON's first-wins */
  CHECK(damo_json_parse("{\"a\":1,\"a\":2}", 13, "x.json", DAMO_JSON_ALLOW_DUPLICATE_KEYS, &root) == DAMO_OK);
  CHECK(root && cJSON_GetObjectItemCaseSensitive(root, "a")->valueint == 1);
  cJSON_Delete(root);
  /* files: the message names the path */
  const char *path = tmp_path("dup.json");
  write_bytes(path, "{\"lr\": 1, \"lr\": 2}", 18);
  root = (struct cJSON *)1;
  CHECK(damo_json_read_file(path, 0, &root) == DAMO_ERR_FORMAT && !root);
  CHECK_MSG(strstr(damo_last_error(), path) && strstr(damo_last_error(), "\"lr\""), "%s", damo_last_error());
  unlink(path);
  CHECK(damo_json_read_file(tmp_path("absent.json"), 0, &root) == DAMO_ERR_NOT_FOUND);
}

int main(void) {
  tmpdir_template("io");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_atomic_write);
  RUN(test_npy_roundtrip);
  RUN(test_npy_numpy_fixtures);
  RUN(test_npy_rejects);
  RUN(test_safetensors_roundtrip);
  RUN(test_safetensors_conversions);
  RUN(test_safetensors_bad);
  RUN(test_json_strict);
  clean_tmpdir(1);
  return test_summary("io");
}
