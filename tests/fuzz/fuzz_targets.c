/* fuzz_targets.c - the bodies of damo's fuzz targets (see fuzz_targets.h). Only the public
 * API of include/damo.h is used; readers that take a path get the bytes written to a file
 * of one scratch folder per process (under $FUZZ_TMPDIR, else /dev/shm, else $TMPDIR or
 * /tmp), reused for every input and removed at exit.
 *
 * Guard. One kind of input is skipped (FUZZ_SKIPPED) before the reader sees it: a picture
 * declaring between FUZZ_MAX_PIXELS and damo's limit of 2^27 pixels (a few bytes of GIF
 * header can): loading it is the contract, and resizing 100M pixels under ASan outlasts
 * -timeout; sizes above damo's limit still reach damo_image_load. The guards of the first
 * campaign against the defects of issue 18 (an empty JSON key, IDX and model-directory
 * headers declaring more than the file holds, the BPE over-read) are gone with the fixes;
 * each has a regression input in tests/fuzz/regressions/. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_targets.h"

#include <cjson/cJSON.h>
#include <damo.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <stb/stb_image.h>

#define FUZZ_MAX_PIXELS ((int64_t)1 << 20)

/* ------------------------------------------------------------------ scratch files */

static char scratch_dir[512];

static void remove_tree(const char *path) {
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char sub[1024];
      snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
      remove_tree(sub);
    }
    closedir(d);
    rmdir(path);
  } else {
    remove(path);
  }
}

static void scratch_cleanup(void) {
  if (scratch_dir[0]) remove_tree(scratch_dir);
}

/* scratch/name (name may hold one folder level, created on demand). */
static const char *scratch_path(const char *name) {
  static char buf[4][1024];
  static int k;
  if (!scratch_dir[0]) {
    const char *base = getenv("FUZZ_TMPDIR");
    if (!base || !*base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(scratch_dir, sizeof scratch_dir, "%s/damo_fuzz_XXXXXX", base);
    if (!mkdtemp(scratch_dir)) {
      perror("fuzz: mkdtemp");
      abort();
    }
    atexit(scratch_cleanup);
  }
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", scratch_dir, name);
  const char *slash = strchr(name, '/');
  if (slash) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%.*s", scratch_dir, (int)(slash - name), name);
    if (access(dir, F_OK) != 0 && mkdir(dir, 0700) != 0) {
      perror("fuzz: mkdir");
      abort();
    }
  }
  return buf[k];
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
    perror(path);
    abort(); /* the harness's own failure: not an input's */
  }
}

/* Writes data to scratch/name and returns the path. */
static const char *to_file(const char *name, const uint8_t *data, size_t size) {
  const char *path = scratch_path(name);
  write_file(path, data, size);
  return path;
}

/* Writes the two files of a split input (FUZZ_SPLIT between them; no separator: all of it
 * is the first file and the second is empty) into scratch/dir. */
static const char *to_dir2(const char *dir, const char *first, const char *second, const uint8_t *data, size_t size) {
  size_t sep = strlen(FUZZ_SPLIT), cut = size, rest = size;
  for (size_t i = 0; i + sep <= size; i++)
    if (!memcmp(data + i, FUZZ_SPLIT, sep)) {
      cut = i;
      rest = i + sep;
      break;
    }
  char name[256];
  snprintf(name, sizeof name, "%s/%s", dir, first);
  write_file(scratch_path(name), data, cut);
  snprintf(name, sizeof name, "%s/%s", dir, second);
  write_file(scratch_path(name), data + rest, size - rest);
  return scratch_path(dir);
}

/* A NUL-terminated copy. */
static char *to_string(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) abort();
  if (size) memcpy(s, data, size);
  s[size] = '\0';
  return s;
}

#define FUZZ_ASSERT(cond)                                                               \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "fuzz: property broken at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                          \
    }                                                                                   \
  } while (0)

/* ------------------------------------------------------------------ tensors and files */

int fuzz_npy(const uint8_t *data, size_t size) {
  damo_tensor *t = NULL;
  damo_status st = damo_npy_load(to_file("in.npy", data, size), &t);
  if (st == DAMO_OK) {
    FUZZ_ASSERT(t && t->ndim >= 0 && t->ndim <= DAMO_MAX_DIMS);
    damo_tensor_free(t);
  } else {
    FUZZ_ASSERT(!t && damo_last_error()[0]);
  }
  return st;
}

int fuzz_safetensors(const uint8_t *data, size_t size) {
  damo_tensor_dict *d = NULL;
  damo_status st = damo_safetensors_load(to_file("in.safetensors", data, size), &d);
  if (st == DAMO_OK) {
    FUZZ_ASSERT(d);
    for (int i = 0; i < d->count; i++) FUZZ_ASSERT(damo_tensor_dict_get(d, d->names[i]) != NULL);
    damo_tensor_dict_free(d);
  } else {
    FUZZ_ASSERT(!d && damo_last_error()[0]);
  }
  return st;
}

int fuzz_idx(const uint8_t *data, size_t size) {
  const char *path = to_file("in-idx3-ubyte.gz", data, size);
  damo_tensor *t = NULL;
  damo_status st = damo_idx_load(path, &t);
  if (st == DAMO_OK) damo_tensor_free(t);
  else FUZZ_ASSERT(!t);
  return st;
}

int fuzz_csv(const uint8_t *data, size_t size) {
  /* The options come from the input's length, so a seed keeps its bytes as they are. */
  static const char *const labels[] = {NULL, "label", "#0", "#2", "y", "#-1"};
  static const char delims[] = {0, ';', '\t', ' '};
  damo_csv_options o = {(int)(size & 1), labels[(size >> 1) % 6], delims[(size / 12) % 4]};
  damo_tensor *x = NULL, *y = NULL;
  damo_status st = damo_csv_load(to_file("in.csv", data, size), &o, &x, &y);
  if (st == DAMO_OK) {
    FUZZ_ASSERT(x && x->ndim == 2 && (y != NULL) == (o.label_column != NULL));
    if (y) FUZZ_ASSERT(y->ndim == 1 && y->shape[0] == x->shape[0]);
  }
  damo_tensor_free(x);
  damo_tensor_free(y);
  return st;
}

int fuzz_image(const uint8_t *data, size_t size) {
  static const int channels[3] = {0, 1, 3};
  int w, h, have;
  if (size <= INT32_MAX && stbi_info_from_memory(data, (int)size, &w, &h, &have)) {
    int64_t pixels = (int64_t)w * h;
    if (pixels > FUZZ_MAX_PIXELS && pixels <= ((int64_t)1 << 27) && w <= 65535 && h <= 65535) return FUZZ_SKIPPED;
  }
  damo_tensor *img = NULL;
  damo_status st = damo_image_load(to_file("in.img", data, size), channels[size % 3], &img);
  if (st != DAMO_OK) return st;
  FUZZ_ASSERT(img && img->ndim == 3);
  damo_tensor *in = NULL, *small = NULL;
  int c = size & 4 ? 3 : 1;
  damo_status s2 = damo_image_to_model_input(img, 28, 28, c, (int)(size & 8), &in);
  if (s2 == DAMO_OK) {
    FUZZ_ASSERT(in->ndim == 3 && in->shape[0] == 28 && in->shape[1] == 28 && in->shape[2] == c);
    const float *v = (const float *)in->data;
    for (int64_t i = 0; i < 28 * 28 * c; i++) FUZZ_ASSERT(v[i] >= 0 && v[i] <= 255);
  }
  if (damo_image_resize(img, 5, 7, &small) == DAMO_OK) FUZZ_ASSERT(small->shape[0] == 5 && small->shape[1] == 7);
  damo_tensor_free(small);
  damo_tensor_free(in);
  damo_tensor_free(img);
  return s2;
}

/* ------------------------------------------------------------------ model directories */

int fuzz_config(const uint8_t *data, size_t size) {
  char *text = to_string(data, size);
  damo_model *m = NULL;
  damo_status st = damo_model_from_config_json(text, "fuzz.json", &m);
  if (st == DAMO_OK) {
    damo_compile_options co;
    damo_fit_options fo = {0};
    (void)damo_model_config_compile_options(m, &co);
    (void)damo_model_config_fit_options(m, &fo);
    damo_model_free(m);
  } else {
    FUZZ_ASSERT(!m && damo_last_error()[0]);
  }
  free(text);
  return st;
}

int fuzz_seqdir(const uint8_t *data, size_t size) {
  const char *dir = to_dir2("seq", "config.json", "model.safetensors", data, size);
  damo_model *m = NULL;
  damo_status st = damo_model_load(dir, &m);
  if (st == DAMO_OK) damo_model_free(m);
  else FUZZ_ASSERT(!m);
  return st;
}

int fuzz_gpt2dir(const uint8_t *data, size_t size) {
  const char *dir = to_dir2("gpt2", "config.json", "model.safetensors", data, size);
  damo_gpt2 *m = NULL;
  damo_status st = damo_gpt2_load(dir, &m);
  if (st == DAMO_OK) {
    FUZZ_ASSERT(damo_gpt2_num_tensors(m) > 0);
    damo_gpt2_free(m);
  } else {
    FUZZ_ASSERT(!m);
  }
  return st;
}

int fuzz_bertdir(const uint8_t *data, size_t size) {
  const char *dir = to_dir2("bert", "config.json", "model.safetensors", data, size);
  damo_bert *m = NULL;
  damo_status st = damo_bert_load(dir, 0, 7, &m);
  if (st == DAMO_OK) {
    FUZZ_ASSERT(damo_bert_num_tensors(m) > 0);
    damo_bert_free(m);
  } else {
    FUZZ_ASSERT(!m);
  }
  return st;
}

/* ------------------------------------------------------------------ text */

/* The documented shape of cleaned text: valid UTF-8, no control bytes or upper-case ASCII,
 * single spaces between words and none at the ends. */
static void check_clean_text(const char *s, size_t n) {
  FUZZ_ASSERT(strlen(s) == n);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    FUZZ_ASSERT(c >= 0x20 && c != 0x7F && !(c >= 'A' && c <= 'Z'));
    FUZZ_ASSERT(c != ' ' || (i > 0 && i + 1 < n && s[i + 1] != ' '));
    if (c >= 0x80) {
      size_t L = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
      FUZZ_ASSERT(L && c <= 0xF4 && i + L <= n);
      for (size_t k = 1; k < L; k++) FUZZ_ASSERT(((unsigned char)s[i + k] & 0xC0) == 0x80);
      i += L - 1;
    }
  }
}

static damo_vocab *word_vocab(void) {
  static damo_vocab *v;
  if (!v) {
    const char *texts[] = {"free money urltoken the the the numtoken click here", "hello world the money"};
    if (damo_vocab_build(texts, 2, 1, 0, &v) != DAMO_OK) abort();
  }
  return v;
}

static void check_word_ids(const damo_vocab *v, const char *text, size_t n) {
  int32_t ids[64];
  int64_t words = 0;
  FUZZ_ASSERT(damo_vocab_encode(v, text, n, 64, ids, &words) == DAMO_OK && words >= 0);
  for (int i = 0; i < 64; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < damo_vocab_size(v));
  for (int64_t i = words; i < 64; i++) FUZZ_ASSERT(ids[i] == DAMO_VOCAB_PAD);
}

int fuzz_email(const uint8_t *data, size_t size) {
  const char *raw = (const char *)data; /* the cleaners take (pointer, length): no copy */
  char *out = NULL;
  size_t n = 0;
  damo_status st = damo_email_clean(raw, size, &out, &n);
  FUZZ_ASSERT(st == DAMO_OK && out); /* "never fails on malformed input" */
  check_clean_text(out, n);
  check_word_ids(word_vocab(), out, n);
  size_t pos = 0, start, len;
  while (damo_text_next_word(out, n, &pos, &start, &len)) FUZZ_ASSERT(len > 0 && start + len <= n && pos <= n);
  free(out);
  damo_text_clean_options o = {1};
  FUZZ_ASSERT(damo_email_clean_ex(raw, size, &o, &out, &n) == DAMO_OK);
  check_clean_text(out, n);
  free(out);
  FUZZ_ASSERT(damo_text_normalize(raw, size, size & 1 ? &o : NULL, &out, &n) == DAMO_OK);
  check_clean_text(out, n);
  free(out);
  return st;
}

int fuzz_vocab(const uint8_t *data, size_t size) {
  damo_vocab *v = NULL;
  damo_status st = damo_vocab_load(to_file("vocab.txt", data, size), &v);
  if (st != DAMO_OK) {
    FUZZ_ASSERT(!v);
    return st;
  }
  int32_t n = damo_vocab_size(v);
  FUZZ_ASSERT(n >= 2 && !strcmp(damo_vocab_word(v, 0), "<pad>") && !strcmp(damo_vocab_word(v, 1), "<unk>"));
  for (int32_t id = 2; id < n; id++) {
    const char *w = damo_vocab_word(v, id);
    FUZZ_ASSERT(w && damo_vocab_id(v, w, strlen(w)) == id); /* duplicates are refused */
  }
  static const char text[] = "the quick brown fox don't jump ovér 42 urltoken";
  check_word_ids(v, text, sizeof text - 1);
  damo_vocab_free(v);
  return st;
}

/* GPT-2's spelling of one byte (its bytes_to_unicode), UTF-8, NUL-terminated. */
static void gpt2_byte_spelling(int b, char out[3]) {
  int cp = b, extra = 256;
  for (int i = 0; i < 256; i++) {
    int printable = (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
    if (!printable) {
      if (i == b) cp = extra;
      extra++;
    }
  }
  if (cp < 0x80) {
    out[0] = (char)cp, out[1] = '\0';
  } else {
    out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = '\0';
  }
}

/* A small byte-level vocabulary (256 bytes + merges of common English pairs) in scratch/dir. */
static const char *small_bpe_dir(const char *dir) {
#define SP "\xC4\xA0" /* GPT-2's spelling of a space */
  static const char *const merges[][2] = {
      {SP, "t"}, {"h", "e"}, {"i", "n"}, {SP "t", "he"}, {"e", "r"},   {SP, "a"},      {"o", "n"},  {"r", "e"},
      {"a", "n"}, {SP, "s"}, {"t", "h"}, {SP "a", "n"},  {SP "an", "d"}, {"in", "g"}, {"o", "u"}, {SP, "w"}};
#undef SP
  enum { N_MERGES = sizeof merges / sizeof merges[0] };
  char name[256];
  snprintf(name, sizeof name, "%s/encoder.json", dir);
  FILE *f = fopen(scratch_path(name), "wb");
  if (!f) abort();
  fputc('{', f);
  for (int b = 0; b < 256; b++) {
    char s[3];
    gpt2_byte_spelling(b, s);
    fprintf(f, "\"%s%s\": %d, ", b == '"' || b == '\\' ? "\\" : "", s, b);
  }
  for (int i = 0; i < N_MERGES; i++) fprintf(f, "\"%s%s\": %d, ", merges[i][0], merges[i][1], 256 + i);
  fprintf(f, "\"<|endoftext|>\": %d}", 256 + N_MERGES);
  fclose(f);
  snprintf(name, sizeof name, "%s/vocab.bpe", dir);
  f = fopen(scratch_path(name), "wb");
  if (!f) abort();
  fputs("#version: 0.2\n", f);
  for (int i = 0; i < N_MERGES; i++) fprintf(f, "%s %s\n", merges[i][0], merges[i][1]);
  fclose(f);
  return scratch_path(dir);
}

/* Encodes text and checks the ids and that decoding gives the text back. */
static void check_bpe_roundtrip(const damo_bpe *bpe, const char *text, size_t len) {
  int32_t *ids = NULL;
  int64_t n = 0;
  damo_status st = damo_bpe_encode(bpe, text, len, &ids, &n);
  if (st != DAMO_OK) { /* only invalid UTF-8 is refused */
    FUZZ_ASSERT(st == DAMO_ERR_INVALID_ARG);
    free(ids);
    return;
  }
  for (int64_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < damo_bpe_vocab_size(bpe));
  char *back = NULL;
  size_t back_len = 0;
  FUZZ_ASSERT(damo_bpe_decode(bpe, ids, n, &back, &back_len) == DAMO_OK);
  FUZZ_ASSERT(back_len == len && (len == 0 || !memcmp(back, text, len)));
  free(back);
  free(ids);
}

int fuzz_bpe_vocab(const uint8_t *data, size_t size) {
  damo_bpe *bpe = NULL;
  damo_status st = damo_bpe_load(to_dir2("bpe", "encoder.json", "vocab.bpe", data, size), &bpe);
  if (st != DAMO_OK) {
    FUZZ_ASSERT(!bpe);
    return st;
  }
  static const char text[] = "Hello world, the 12 cats' <|endoftext|> in  the\n\nhouse \xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80!";
  check_bpe_roundtrip(bpe, text, sizeof text - 1);
  damo_bpe_free(bpe);
  return st;
}

static const damo_bpe *builtin_bpe(void) {
  static damo_bpe *bpe;
  if (!bpe && damo_bpe_load(small_bpe_dir("bpe_fixed"), &bpe) != DAMO_OK) {
    fprintf(stderr, "fuzz: the built-in GPT-2 vocabulary does not load: %s\n", damo_last_error());
    abort();
  }
  return bpe;
}

int fuzz_bpe_encode(const uint8_t *data, size_t size) {
  check_bpe_roundtrip(builtin_bpe(), (const char *)data, size);
  return DAMO_OK;
}

/* Tokenizes and encodes text[0..len) (NUL-terminated; as a pair it is cut at its middle). */
static void check_wordpiece(const damo_wordpiece *wp, const char *text, size_t len) {
  int32_t V = damo_wordpiece_vocab_size(wp), *ids = NULL;
  int64_t n = 0;
  FUZZ_ASSERT(damo_wordpiece_tokenize(wp, text, len, &ids, &n) == DAMO_OK);
  for (int64_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < V);
  char *back = NULL;
  FUZZ_ASSERT(damo_wordpiece_decode(wp, ids, n, &back) == DAMO_OK && back);
  free(back);
  free(ids);
  char *a = to_string((const uint8_t *)text, len), *b = to_string((const uint8_t *)text + len / 2, len - len / 2);
  a[len / 2] = '\0';
  int32_t e[16], types[16], mask[16];
  int used = 0, max_len = 5 + (int)(len % 12);
  FUZZ_ASSERT(damo_wordpiece_encode(wp, a, b, max_len, e, types, mask, &used) == DAMO_OK);
  FUZZ_ASSERT(used >= 3 && used <= max_len && e[0] == damo_wordpiece_token_id(wp, "[CLS]"));
  for (int i = 0; i < max_len; i++) FUZZ_ASSERT(e[i] >= 0 && e[i] < V && mask[i] == (i < used));
  FUZZ_ASSERT(damo_wordpiece_encode_head_tail(wp, text, max_len, (int)(len % 4), e, types, mask, &used) == DAMO_OK);
  FUZZ_ASSERT(used >= 2 && used <= max_len);
  free(a);
  free(b);
}

int fuzz_wordpiece_vocab(const uint8_t *data, size_t size) {
  /* npm's vocab.json is a JSON array ('[' then '"' or white space); else a vocab.txt. */
  int json = size >= 2 && data[0] == '[' && (data[1] == '"' || data[1] == ' ' || data[1] == '\n');
  damo_wordpiece *wp = NULL;
  damo_status st = damo_wordpiece_load(to_file(json ? "wp/vocab.json" : "wp/vocab.txt", data, size), &wp);
  if (st != DAMO_OK) {
    FUZZ_ASSERT(!wp);
    return st;
  }
  int32_t V = damo_wordpiece_vocab_size(wp);
  for (int32_t id = 0; id < V; id++) {
    const char *t = damo_wordpiece_token(wp, id);
    FUZZ_ASSERT(t && damo_wordpiece_token_id(wp, t) == id); /* duplicates are refused */
  }
  static const char text[] = "Hello, WORLD! unaffable r\xC3\xA9sum\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 don't [MASK] 3.14";
  check_wordpiece(wp, text, sizeof text - 1);
  damo_wordpiece_free(wp);
  return st;
}

static const damo_wordpiece *builtin_wordpiece(void) {
  static damo_wordpiece *wp;
  if (!wp) {
    static const char vocab[] =
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nhello\nworld\nun\n##aff\n##able\nrun\n##ning\n"
        "a\nb\nc\nd\ne\ni\no\nr\ns\nt\nx\n##a\n##b\n##c\n##d\n##e\n##i\n##o\n##r\n##s\n##t\n##x\n"
        "0\n1\n2\n##0\n##1\n,\n.\n!\n'\n?\n-\n\xE4\xB8\xAD\n\xE6\x96\x87\n\xCF\x83\n##\xCF\x82\n";
    if (damo_wordpiece_load(to_file("wp_fixed/vocab.txt", (const uint8_t *)vocab, sizeof vocab - 1), &wp) != DAMO_OK) {
      fprintf(stderr, "fuzz: the built-in WordPiece vocabulary does not load: %s\n", damo_last_error());
      abort();
    }
  }
  return wp;
}

int fuzz_wordpiece_encode(const uint8_t *data, size_t size) {
  char *text = to_string(data, size);
  check_wordpiece(builtin_wordpiece(), text, size);
  free(text);
  return DAMO_OK;
}

const char *fuzz_builtin_dir(const char *which) {
  if (!strcmp(which, "bpe")) {
    (void)builtin_bpe();
    return scratch_path("bpe_fixed");
  }
  (void)builtin_wordpiece();
  return scratch_path("wp_fixed");
}

/* ------------------------------------------------------------------ training checkpoints */

/* A fixed tiny run for the checkpoint target: 8 parameters and 2 values of state, a
 * quadratic loss, AdamW, 2 epochs of 3 steps with validation and early stopping that keeps
 * the best weights, so a resumed checkpoint exercises position, history and best weights. */
typedef struct ckpt_model {
  float w[8], g[8], state[2];
  int64_t steps;
} ckpt_model;

static damo_status ckpt_stage(void *ctx, int64_t micro) {
  (void)ctx, (void)micro;
  return DAMO_OK;
}

static damo_status ckpt_forward(void *ctx, float *loss) {
  ckpt_model *m = ctx;
  double l = 0;
  for (int i = 0; i < 8; i++) {
    const double d = m->w[i] - 0.1 * (double)i;
    l += d * d, m->g[i] = (float)(2 * d);
  }
  *loss = (float)l;
  return DAMO_OK;
}

static damo_status ckpt_backward(void *ctx) {
  ckpt_model *m = ctx;
  m->state[0] += 1.0f, m->state[1] = m->g[0];
  return DAMO_OK;
}


typedef struct ckpt_run {
  ckpt_model m;
  damo_optimizer *opt;
  damo_trainer *t;
  const char *save_to; /* seed making: the checkpoint of the first CHECKPOINT event */
} ckpt_run;

static damo_status ckpt_validate(void *ctx, double *row) {
  const ckpt_model *m = &((ckpt_run *)ctx)->m;
  row[DAMO_H_VAL_LOSS] = (double)m->w[0] * m->w[0];
  return DAMO_OK;
}

static damo_status ckpt_save(void *ctx, const damo_train_event *e) {
  ckpt_run *r = ctx;
  if (!r->save_to) return DAMO_OK;
  damo_tensor_dict *d = damo_tensor_dict_new();
  damo_status st = d ? damo_trainer_checkpoint_add(e, d) : DAMO_ERR_NOMEM;
  if (st == DAMO_OK) st = damo_safetensors_save(r->save_to, d, NULL, 0);
  damo_tensor_dict_free(d);
  r->save_to = NULL;
  return st;
}

static damo_status ckpt_open(ckpt_run *r) {
  memset(r, 0, sizeof *r);
  damo_optimizer_config c = damo_adamw(0.05f, 0.01f);
  c.clip_norm = 1.0f;
  r->opt = damo_optimizer_new(&c, 8);
  damo_train_adapter a = {.name = "fuzz", .ctx = &r->m, .params = r->m.w, .grads = r->m.g, .n_params = 8,
                          .stage = ckpt_stage, .forward = ckpt_forward, .backward = ckpt_backward,
                          .state = r->m.state, .n_state = 2};
  return r->opt ? damo_trainer_new(&a, r->opt, 1, 6, &r->t) : DAMO_ERR_NOMEM;
}

static damo_status ckpt_train(ckpt_run *r) {
  damo_train_loop loop = {.epochs = 2, .steps_per_epoch = 3, .checkpoint_every = 2, .patience = 1,
                          .monitor = DAMO_H_VAL_LOSS, .restore_best = 1};
  damo_train_hooks hooks = {.ctx = r, .validate = ckpt_validate, .checkpoint = ckpt_save};
  return damo_trainer_run(r->t, &loop, &hooks, NULL);
}

static void ckpt_close(ckpt_run *r) {
  damo_trainer_free(r->t);
  damo_optimizer_free(r->opt);
}

int fuzz_checkpoint_seed(const char *path) {
  ckpt_run r;
  damo_status st = ckpt_open(&r);
  r.save_to = path;
  if (st == DAMO_OK) st = ckpt_train(&r);
  ckpt_close(&r);
  return st;
}

int fuzz_checkpoint(const uint8_t *data, size_t size) {
  damo_tensor_dict *d = NULL;
  damo_status st = damo_safetensors_load(to_file("trainer_state.safetensors", data, size), &d);
  if (st != DAMO_OK) return st;
  ckpt_run r;
  st = ckpt_open(&r);
  if (st == DAMO_OK) st = damo_trainer_resume(r.t, d, "trainer_state.safetensors");
  if (st == DAMO_OK) {
    st = ckpt_train(&r); /* a resumed run must end with a status, never a crash */
    for (int i = 0; st == DAMO_OK && i < 8; i++) FUZZ_ASSERT(r.m.w[i] == r.m.w[i]);
  } else {
    FUZZ_ASSERT(damo_last_error()[0]);
  }
  ckpt_close(&r);
  damo_tensor_dict_free(d);
  return st;
}

/* ------------------------------------------------------------------ federated.json */

/* A fixed tiny federated run (4 clients of 16 rows, 2 a round, 3 rounds) whose checkpoint
 * directory holds the global model and the fuzzer's federated.json, resumed from it. */
static const char fed_config[] =
    "{\"format\": \"damo.sequential\", \"input_shape\": [3], \"layers\": [{\"type\": \"dense\", \"units\": 4, "
    "\"activation\": \"tanh\"}, {\"type\": \"dense\", \"units\": 2}], \"loss\": \"sparse_categorical_crossentropy\", "
    "\"optimizer\": {\"type\": \"sgd\", \"learning_rate\": 0.1}}";

static damo_status fed_run(const char *dir, int resume, damo_model **out) {
  damo_model *m = NULL;
  damo_compile_options copt;
  const int64_t xs[2] = {16, 3}, ys = 16;
  damo_tensor *x = damo_tensor_new(DAMO_F32, 2, xs), *y = damo_tensor_new(DAMO_I32, 1, &ys);
  if (!x || !y) abort();
  for (int i = 0; i < 16; i++) {
    ((int32_t *)y->data)[i] = i % 2;
    for (int k = 0; k < 3; k++) ((float *)x->data)[i * 3 + k] = (float)((i * 7 + k * 3) % 5) - 2.0f + (float)(i % 2);
  }
  damo_status st = damo_model_from_config_json(fed_config, "fed.json", &m);
  if (st == DAMO_OK) st = damo_model_build(m, 1);
  if (st == DAMO_OK && (st = damo_model_config_compile_options(m, &copt)) == DAMO_OK) st = damo_model_compile(m, &copt);
  damo_fed_options o = {.clients = 4, .fraction = 0.5, .rounds = 3, .local_epochs = 1, .batch_size = 4, .seed = 1,
                        .checkpoint_dir = dir, .resume = resume};
  if (st == DAMO_OK) st = damo_model_federate(m, x, y, &o, NULL);
  damo_tensor_free(x);
  damo_tensor_free(y);
  if (out && st == DAMO_OK) *out = m;
  else damo_model_free(m);
  return st;
}

int fuzz_federated_seed(const char *dir) { return fed_run(dir, 0, NULL); }

int fuzz_federated(const uint8_t *data, size_t size) {
  static char dir[1024];
  if (!dir[0]) { /* the global model of a finished run, once */
    snprintf(dir, sizeof dir, "%s", scratch_path("fed"));
    if (fed_run(dir, 0, NULL) != DAMO_OK) abort();
  }
  char path[1200];
  snprintf(path, sizeof path, "%s/federated.json", dir);
  write_file(path, data, size);
  damo_model *m = NULL;
  const damo_status st = fed_run(dir, 1, &m); /* a resumed run ends with a status, never a crash */
  if (st == DAMO_OK) {
    FUZZ_ASSERT(damo_model_num_params(m) == 26);
  } else {
    FUZZ_ASSERT(damo_last_error()[0]);
  }
  damo_model_free(m);
  return st;
}

/* ------------------------------------------------------------------ table */

const fuzz_target fuzz_targets[] = {
    {"npy", fuzz_npy},
    {"safetensors", fuzz_safetensors},
    {"config", fuzz_config},
    {"seqdir", fuzz_seqdir},
    {"gpt2dir", fuzz_gpt2dir},
    {"bertdir", fuzz_bertdir},
    {"csv", fuzz_csv},
    {"idx", fuzz_idx},
    {"image", fuzz_image},
    {"email", fuzz_email},
    {"vocab", fuzz_vocab},
    {"bpe_vocab", fuzz_bpe_vocab},
    {"bpe_encode", fuzz_bpe_encode},
    {"wordpiece_vocab", fuzz_wordpiece_vocab},
    {"wordpiece_encode", fuzz_wordpiece_encode},
    {"checkpoint", fuzz_checkpoint},
    {"federated", fuzz_federated},
    {NULL, NULL},
};

const fuzz_target *fuzz_target_find(const char *name) {
  for (const fuzz_target *t = fuzz_targets; t->name; t++)
    if (!strcmp(t->name, name)) return t;
  return NULL;
}
