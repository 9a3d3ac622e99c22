/* test_bpe.c - GPT-2 byte-level BPE (src/text/bpe.c, bpe_vocab.c).
 *
 * With the npm vocabulary installed (sh scripts/setup.sh --text): the ids of hand-picked
 * strings and of four corpus files equal the reference encoder's (tests/fixtures/
 * bpe_cases.json, made by tests/ref/gen_bpe_fixture.js), decode(encode(x)) == x, bad ids
 * and bad UTF-8 are refused. Without it those checks print "skipped". Always: a small
 * vocabulary written here (merging, the reference's aliased pairs, DAMO_DATA_DIR) and
 * corrupt vocabulary files, each refused with a message naming the file and place; the
 * two merge routines (rescan and heap) agree on random pieces. */
#include "damo.h"
#include "harness.h"
#include "cli_run.h"
#include "text/bpe_internal.h"
#include "tmpfiles.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static damo_bpe *gpt2; /* the installed GPT-2 vocabulary, or NULL */

static char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
    buf[n] = '\0';
    *len = (size_t)n;
  } else {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

/* Encodes text, compares with the expected JSON id array, checks the round trip. */
static void check_encoding(const char *what, const char *text, size_t len, const cJSON *expected) {
  int32_t *ids = NULL;
  int64_t n = -1;
  damo_status st = damo_bpe_encode(gpt2, text, len, &ids, &n);
  CHECK_MSG(st == DAMO_OK, "%s: %s", what, damo_last_error());
  int64_t want = cJSON_GetArraySize(expected), first_diff = -1;
  for (int64_t i = 0; i < n && i < want && first_diff < 0; i++)
    if (ids[i] != cJSON_GetArrayItem(expected, (int)i)->valueint) first_diff = i;
  if (first_diff < 0 && n != want) first_diff = n < want ? n : want;
  CHECK_MSG(first_diff < 0, "%s: %lld ids, reference %lld; first difference at %lld", what, (long long)n,
            (long long)want, (long long)first_diff);
  char *back = NULL;
  size_t back_len = 0;
  st = damo_bpe_decode(gpt2, ids, n, &back, &back_len);
  CHECK_MSG(st == DAMO_OK && back_len == len && !memcmp(back, text, len), "%s: decode(encode(x)) != x", what);
  free(back);
  free(ids);
}

static cJSON *load_fixture(void) {
  size_t len;
  char *text = read_text(DAMO_SOURCE_DIR "/tests/fixtures/bpe_cases.json", &len);
  cJSON *root = text ? cJSON_Parse(text) : NULL;
  free(text);
  return root;
}

static void test_reference_cases(void) {
  if (!gpt2) {
    printf("  skipped: GPT-2 vocabulary not installed (sh scripts/setup.sh --text)\n");
    return;
  }
  cJSON *root = load_fixture();
  CHECK(root != NULL);
  const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
  CHECK(cJSON_GetArraySize(cases) >= 20);
  for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next) {
    const char *text = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
    /* JSON strings may hold U+0000: the length comes from the UTF-8 the parser produced,
     * which stops there, so such a case is compared up to that point only. */
    check_encoding(text, text, strlen(text), cJSON_GetObjectItemCaseSensitive(c, "ids"));
  }
  cJSON_Delete(root);
}

static void test_reference_corpus_files(void) {
  if (!gpt2) {
    printf("  skipped: GPT-2 vocabulary not installed\n");
    return;
  }
  const char *home = getenv("HOME");
  cJSON *root = load_fixture();
  const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
  int compared = 0;
  for (const cJSON *f = files ? files->child : NULL; f && home; f = f->next) {
    char path[1024];
    snprintf(path, sizeof path, "%s/.cache/damo/npm/node_modules/%s", home,
             cJSON_GetObjectItemCaseSensitive(f, "path")->valuestring);
    size_t len;
    char *text = read_text(path, &len);
    if (!text) {
      printf("  skipped %s: not installed\n", path);
      continue;
    }
    check_encoding(path, text, len, cJSON_GetObjectItemCaseSensitive(f, "ids"));
    compared++;
    free(text);
  }
  printf("  %d corpus files compared with the reference\n", compared);
  cJSON_Delete(root);
}

static void test_vocabulary_and_bad_input(void) {
  if (!gpt2) {
    printf("  skipped: GPT-2 vocabulary not installed\n");
    return;
  }
  CHECK(damo_bpe_vocab_size(gpt2) == 50257);
  CHECK(damo_bpe_token_id(gpt2, "<|endoftext|>") == 50256);
  CHECK(damo_bpe_token_id(gpt2, "\xC4\xA0the") == 262); /* "Ġthe" */
  CHECK(damo_bpe_token_id(gpt2, "no such token at all") == -1);

  /* Every id decodes to at least one byte; the bytes of all ids, id by id, are the
   * decode of the whole list. */
  int32_t n_ids = damo_bpe_vocab_size(gpt2);
  int32_t *all = malloc((size_t)n_ids * sizeof *all);
  for (int32_t i = 0; i < n_ids; i++) all[i] = i;
  char *text = NULL;
  size_t len = 0, sum = 0;
  CHECK(damo_bpe_decode(gpt2, all, n_ids, &text, &len) == DAMO_OK);
  int empty = 0;
  for (int32_t i = 0; i < n_ids; i++) {
    char *one = NULL;
    size_t one_len = 0;
    damo_bpe_decode(gpt2, &all[i], 1, &one, &one_len);
    empty += one_len == 0;
    if (one && sum + one_len <= len && memcmp(text + sum, one, one_len)) empty++;
    sum += one_len;
    free(one);
  }
  CHECK(empty == 0 && sum == len);
  free(text);
  free(all);

  int32_t bad[3] = {15496, 50257, 995};
  CHECK(damo_bpe_decode(gpt2, bad, 3, &text, &len) == DAMO_ERR_INVALID_ARG && text == NULL);
  CHECK_MSG(strstr(damo_last_error(), "50257") && strstr(damo_last_error(), "position 1"), "%s", damo_last_error());
  bad[1] = -3;
  CHECK(damo_bpe_decode(gpt2, bad, 3, &text, &len) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_bpe_decode(gpt2, bad, 0, &text, &len) == DAMO_OK && len == 0 && text && text[0] == '\0');
  free(text);

  int32_t *ids = NULL;
  int64_t n = -1;
  CHECK(damo_bpe_encode(gpt2, "abc\xFF", 4, &ids, &n) == DAMO_ERR_INVALID_ARG && ids == NULL && n == 0);
  CHECK_MSG(strstr(damo_last_error(), "offset 3") != NULL, "%s", damo_last_error());
  CHECK(damo_bpe_encode(gpt2, "\xED\xA0\x80", 3, &ids, &n) == DAMO_ERR_INVALID_ARG); /* a UTF-16 surrogate */
  CHECK(damo_bpe_encode(gpt2, "", 0, &ids, &n) == DAMO_OK && n == 0 && ids == NULL);
  /* An embedded NUL is text like any other control character. */
  CHECK(damo_bpe_encode(gpt2, "a\0b", 3, &ids, &n) == DAMO_OK && n == 3);
  if (n == 3) CHECK(ids[0] == 64 && ids[1] == 188 && ids[2] == 65);
  free(ids);

  /* A long run of spaces (the pattern backtracks over it) and a long run of letters. */
  size_t big = 1 << 20;
  char *spaces = malloc(big + 1);
  memset(spaces, ' ', big);
  spaces[big] = 'x';
  CHECK(damo_bpe_encode(gpt2, spaces, big + 1, &ids, &n) == DAMO_OK && n > 0);
  char *back = NULL;
  CHECK(damo_bpe_decode(gpt2, ids, n, &back, &len) == DAMO_OK && len == big + 1 && !memcmp(back, spaces, len));
  free(back);
  free(ids);
  for (size_t i = 0; i < 20000; i++) spaces[i] = (char)('a' + (i * 7 + i / 26) % 26);
  CHECK(damo_bpe_encode(gpt2, spaces, 20000, &ids, &n) == DAMO_OK && n > 1000);
  CHECK(damo_bpe_decode(gpt2, ids, n, &back, &len) == DAMO_OK && len == 20000 && !memcmp(back, spaces, len));
  free(back);
  free(ids);
  free(spaces);
}

/* 1 if both merge routines give the same ids for word[0..len). */
static int merges_agree(const damo_bpe *bpe, const unsigned char *word, size_t len) {
  int32_t *a = malloc(len * sizeof *a), *b = malloc(len * sizeof *b);
  size_t na = bpe_merge_simple(bpe, word, len, a), nb = bpe_merge_heap(bpe, word, len, b);
  int same = na == nb && !memcmp(a, b, na * sizeof *a);
  free(a);
  free(b);
  return same;
}

static void test_merge_routines_agree(void) {
  if (!gpt2) {
    printf("  skipped: GPT-2 vocabulary not installed\n");
    return;
  }
  /* Pieces drawn from alphabets that merge a lot: letters, a leading space, digits,
   * punctuation runs (where the reference's aliases live), spaces, raw bytes. */
  static const char *const alphabets[] = {"etaoinshrdlu", "abcdefghijklmnopqrstuvwxyz", "0123456789",
                                          "\",}])'.[(:;-!?", " ", "\xC3\xA9\xE2\x80\x94\xF0\x9F\x98\x80"};
  uint64_t state = 12345;
  unsigned char word[700];
  int disagree = 0, tried = 0;
  for (int round = 0; round < 600; round++) {
    const char *alpha = alphabets[round % 6];
    size_t n_alpha = strlen(alpha), len = 1 + (size_t)(round * 7 % 690), start = 0;
    if (round % 4 == 1) word[start++] = ' ';
    for (size_t i = start; i < len; i++) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      word[i] = (unsigned char)alpha[(state >> 33) % n_alpha];
    }
    disagree += !merges_agree(gpt2, word, len);
    tried++;
  }
  const char *repeated = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\",\",\",\",\",\",\",\",\"";
  disagree += !merges_agree(gpt2, (const unsigned char *)repeated, strlen(repeated));
  CHECK_MSG(disagree == 0, "%d of %d pieces merge differently", disagree, tried + 1);
}

/* damo tokenize: text -> ids -> text, files, and its errors. */
static void test_command_line(void) {
  if (!gpt2) {
    printf("  skipped: GPT-2 vocabulary not installed\n");
    return;
  }
  CHECK(run("printf 'Hello world! It'\\''s 2024.\\n' | %s tokenize --tokenizer gpt2", DAMO_CLI_PATH) == 0);
  CHECK_MSG(!strcmp(cli_out, "15496 995 0 632 338 48609 13 198\n"), "%s", cli_out);
  CHECK(run("printf 'caf\\303\\251  \\n' | %s tokenize --tokenizer gpt2 | %s tokenize --tokenizer gpt2 --decode",
            DAMO_CLI_PATH, DAMO_CLI_PATH) == 0);
  CHECK_MSG(!strcmp(cli_out, "caf\xC3\xA9  \n"), "%s", cli_out);
  const char *file = tmp_path("two words.txt");
  write_bytes(file, "two words", 9);
  CHECK(run("%s tokenize --tokenizer gpt2 '%s'", DAMO_CLI_PATH, file) == 0);
  CHECK_MSG(strstr(cli_out, "two words.txt\t11545 2456\n") && strstr(cli_out, "1 files, 2 tokens"), "%s", cli_out);
  unlink(file);
  CHECK(run("echo 15496 50257 | %s tokenize --tokenizer gpt2 --decode", DAMO_CLI_PATH) == 1);
  CHECK_MSG(strstr(cli_out, "id 50257 at position 1"), "%s", cli_out);
  CHECK(run("echo 15496 x1 | %s tokenize --tokenizer gpt2 --decode", DAMO_CLI_PATH) == 1);
  CHECK_MSG(strstr(cli_out, "'x1' at byte 6 is not an id"), "%s", cli_out);
  CHECK(run("printf 'a\\377' | %s tokenize --tokenizer gpt2", DAMO_CLI_PATH) == 1);
  CHECK_MSG(strstr(cli_out, "not valid UTF-8 at byte offset 1"), "%s", cli_out);
  CHECK(run("%s tokenize --tokenizer nosuch < /dev/null", DAMO_CLI_PATH) == 2);
  CHECK(run("%s tokenize --tokenizer gpt2 --vocab %s < /dev/null", DAMO_CLI_PATH, tmp_path("nowhere")) == 1);
  CHECK_MSG(strstr(cli_out, "encoder.json"), "%s", cli_out);
}

/* ------------------------------------------------------------ a vocabulary written here */

/* GPT-2's spelling of byte b (UTF-8 of its code point), JSON-escaped. */
static void byte_spelling_json(int b, char *out) {
  int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int extra = 0;
  for (int c = 0; c < b; c++)
    extra += !((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF));
  unsigned cp = printable ? (unsigned)b : 256u + (unsigned)extra;
  if (cp == '"' || cp == '\\') sprintf(out, "\\%c", (char)cp);
  else if (cp < 0x80) sprintf(out, "%c", (char)cp);
  else sprintf(out, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
}

/* Extra tokens (ids 256...) and merges of the small vocabulary. "!,#" shows the reference's
 * aliasing: after "! ," the pair ("!,", "#") has the key "!,,#" of merge "! ,#". */
static const char *const extra_tokens[] = {"!,", ",#", "!,#", "he", "ll", "hell", NULL};
static const char *const merges[] = {"! ,", "! ,#", ", #", "h e", "l l", "he ll", NULL};

/* Writes dir/encoder.json (256 byte tokens, then extra_tokens) and dir/vocab.bpe. */
static void write_small_vocab(const char *dir, const char *merges_text) {
  mkdir(dir, 0700);
  char path[600], tok[8];
  snprintf(path, sizeof path, "%s/encoder.json", dir);
  FILE *f = fopen(path, "wb");
  fputc('{', f);
  for (int b = 0; b < 256; b++) {
    byte_spelling_json(b, tok);
    fprintf(f, "%s\"%s\": %d", b ? ", " : "", tok, b);
  }
  for (int i = 0; extra_tokens[i]; i++) fprintf(f, ", \"%s\": %d", extra_tokens[i], 256 + i);
  fputs("}\n", f);
  fclose(f);
  snprintf(path, sizeof path, "%s/vocab.bpe", dir);
  f = fopen(path, "wb");
  if (merges_text) {
    fputs(merges_text, f);
  } else {
    fputs("#version: 0.2\n", f);
    for (int i = 0; merges[i]; i++) fprintf(f, "%s\n", merges[i]);
  }
  fclose(f);
}

static int encode_equals(damo_bpe *bpe, const char *text, const int32_t *want, int64_t n_want) {
  int32_t *ids = NULL;
  int64_t n = 0;
  int ok = damo_bpe_encode(bpe, text, strlen(text), &ids, &n) == DAMO_OK && n == n_want &&
           (n == 0 || !memcmp(ids, want, (size_t)n * sizeof *ids));
  if (!ok) {
    fprintf(stderr, "  encode(\"%s\") =", text);
    for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
  }
  free(ids);
  return ok;
}

static void test_small_vocabulary(void) {
  const char *dir = tmp_path("small");
  write_small_vocab(dir, NULL);
  damo_bpe *bpe = NULL;
  CHECK_MSG(damo_bpe_load(dir, &bpe) == DAMO_OK, "%s", damo_last_error());
  if (!bpe) return;
  CHECK(damo_bpe_vocab_size(bpe) == 262);
  CHECK(damo_bpe_token_id(bpe, "hell") == 261);
  /* h e l l o -> he ll o -> hell o */
  CHECK(encode_equals(bpe, "hello", (int32_t[]){261, 'o'}, 2));
  /* Pieces "he" and " he"; a space is byte 32 (spelt U+0120), and no merge joins it. */
  CHECK(encode_equals(bpe, "he he", (int32_t[]){259, ' ', 259}, 3));
  /* The aliased pair: "!,#" becomes one token, as in the reference encoder (Python's
   * GPT-2 would give "!," "#"). */
  CHECK(encode_equals(bpe, "!,#", (int32_t[]){258}, 1));
  CHECK(encode_equals(bpe, ",#", (int32_t[]){257}, 1));
  const char *aliased = "!,#!,#!!,,##!,#";
  CHECK(merges_agree(bpe, (const unsigned char *)aliased, strlen(aliased)));
  CHECK(encode_equals(bpe, "", NULL, 0));
  char *text = NULL;
  CHECK(damo_bpe_decode(bpe, (int32_t[]){261, 'o', ' ', 258}, 4, &text, NULL) == DAMO_OK && text &&
        !strcmp(text, "hello !,#"));
  free(text);
  damo_bpe_free(bpe);

  /* The default location: $DAMO_DATA_DIR/gpt2 comes first. */
  const char *old = getenv("DAMO_DATA_DIR");
  char *saved = old ? strdup(old) : NULL;
  write_small_vocab(tmp_path("gpt2"), NULL);
  setenv("DAMO_DATA_DIR", tmpdir, 1);
  bpe = NULL;
  CHECK(damo_bpe_load(NULL, &bpe) == DAMO_OK && damo_bpe_vocab_size(bpe) == 262);
  damo_bpe_free(bpe);
  if (saved) setenv("DAMO_DATA_DIR", saved, 1);
  else unsetenv("DAMO_DATA_DIR");
  free(saved);
  damo_bpe_free(NULL);
}

/* Loads dir, expects status and every needle in the message. */
static void expect_load_error(const char *dir, damo_status want, const char *needle1, const char *needle2) {
  damo_bpe *bpe = (damo_bpe *)1;
  damo_status st = damo_bpe_load(dir, &bpe);
  const char *msg = damo_last_error();
  CHECK_MSG(st == want && bpe == NULL, "%s: got %s (%s)", dir, damo_status_name(st), msg);
  CHECK_MSG(strstr(msg, needle1) && (!needle2 || strstr(msg, needle2)), "message \"%s\" lacks \"%s\" / \"%s\"", msg,
            needle1, needle2 ? needle2 : "");
}

static void test_corrupt_vocabulary_files(void) {
  expect_load_error(tmp_path("no-such-folder"), DAMO_ERR_NOT_FOUND, "encoder.json", NULL);

  const char *dir = tmp_path("bad");
  char path[600];
  write_small_vocab(dir, NULL);
  snprintf(path, sizeof path, "%s/encoder.json", dir);
  const char *truncated = "{\"!\": 0,\n \"#\": 1, \"";
  write_bytes(path, truncated, strlen(truncated));
  expect_load_error(dir, DAMO_ERR_FORMAT, "encoder.json: not valid JSON at byte offset", "line 2");

  /* Issue 18.5: strict JSON (a repeated key was "first wins" in cJSON; trailing data ignored) */
  const char *dup = "{\"a\": 0,\n \"b\": 1, \"a\": 2}";
  write_bytes(path, dup, strlen(dup));
  expect_load_error(dir, DAMO_ERR_FORMAT, "encoder.json: duplicate key \"a\" at byte offset 18", "line 2");
  const char *trailing = "{\"a\": 0} {\"b\": 1}";
  write_bytes(path, trailing, strlen(trailing));
  expect_load_error(dir, DAMO_ERR_FORMAT, "encoder.json: unexpected data after the JSON value at byte offset 9", NULL);
  /* Issue 18.6: the id tables are sized by the largest id; one token cannot claim 2^24 - 1 */
  const char *sparse = "{\"a\": 0, \"b\": 16777215}";
  write_bytes(path, sparse, strlen(sparse));
  expect_load_error(dir, DAMO_ERR_FORMAT, "encoder.json: token \"b\" has id 16777215", "only 2 tokens (expected ids below 1028)");
  const char *fractional = "{\"a\": 1.5}";
  write_bytes(path, fractional, strlen(fractional));
  expect_load_error(dir, DAMO_ERR_FORMAT, "encoder.json", "token \"a\"");
  const char *twice = "{\"a\": 1, \"b\": 1}";
  write_bytes(path, twice, strlen(twice));
  expect_load_error(dir, DAMO_ERR_FORMAT, "id 1 is given to both", NULL);
  const char *few = "{\"a\": 0, \"b\": 1}";
  write_bytes(path, few, strlen(few));
  expect_load_error(dir, DAMO_ERR_FORMAT, "encoder.json", "no token for byte 0x00");
  const char *foreign = "{\"\xE2\x82\xAC\": 0}"; /* the euro sign is no GPT-2 byte */
  write_bytes(path, foreign, strlen(foreign));
  expect_load_error(dir, DAMO_ERR_FORMAT, "encoder.json", "U+20AC");

  write_small_vocab(dir, "h e\nl l\n");
  expect_load_error(dir, DAMO_ERR_FORMAT, "vocab.bpe line 1", "#version");
  write_small_vocab(dir, "#version: 0.2\nh e\nl l x\n");
  expect_load_error(dir, DAMO_ERR_FORMAT, "vocab.bpe line 3", "two tokens");
  write_small_vocab(dir, "#version: 0.2\nh e\nq zz\n");
  expect_load_error(dir, DAMO_ERR_FORMAT, "vocab.bpe line 3", "right token is not in encoder.json");
  write_small_vocab(dir, "#version: 0.2\nh l\n");
  expect_load_error(dir, DAMO_ERR_FORMAT, "vocab.bpe line 2", "merged token");
  write_small_vocab(dir, "#version: 0.2\nh e\n\nl l\n");
  expect_load_error(dir, DAMO_ERR_FORMAT, "vocab.bpe line 3", "empty line");
  snprintf(path, sizeof path, "%s/vocab.bpe", dir);
  unlink(path);
  expect_load_error(dir, DAMO_ERR_NOT_FOUND, "vocab.bpe", NULL);

  /* Blank lines at the end and CRLF line ends are fine. */
  write_small_vocab(dir, "#version: 0.2\r\nh e\r\nl l\r\n\n\n");
  damo_bpe *bpe = NULL;
  CHECK_MSG(damo_bpe_load(dir, &bpe) == DAMO_OK, "%s", damo_last_error());
  damo_bpe_free(bpe);
  CHECK(damo_bpe_load(dir, NULL) == DAMO_ERR_INVALID_ARG);
}

/* Issue 18.7: looking a long spelling up compared n bytes of every stored token it probed
 * past, even a shorter one, reading beyond the spelling pool (ASan: heap-buffer-overflow in
 * bpe_spelling_id from load_encoder_tables). Here a 300-byte token lands on the slot of "a",
 * the only token of a 256-byte pool; the load must fail on the missing byte tokens, cleanly. */
static void test_probe_past_shorter_token(void) {
  const char *dir = tmp_path("bad");
  write_small_vocab(dir, NULL);
  char long_tok[301];
  memset(long_tok, 'b', 300);
  long_tok[300] = '\0';
  /* 2 tokens -> 16 slots */
  for (int tries = 0; tries < 8000; tries++) {
    long_tok[0] = (char)('c' + tries % 20), long_tok[1] = (char)('c' + tries / 20 % 20);
    long_tok[2] = (char)('c' + tries / 400 % 20);
    if ((bpe_hash_bytes(long_tok, 300) & 15) == (bpe_hash_bytes("a", 1) & 15)) break;
  }
  char json[400], path[600];
  snprintf(json, sizeof json, "{\"a\": 0, \"%s\": 1}", long_tok);
  snprintf(path, sizeof path, "%s/encoder.json", dir);
  write_bytes(path, json, strlen(json));
  expect_load_error(dir, DAMO_ERR_FORMAT, "encoder.json", "no token for byte 0x00");
}

int main(void) {
  tmpdir_template("bpe");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  if (damo_bpe_load(NULL, &gpt2) != DAMO_OK) {
    printf("GPT-2 vocabulary not found, reference checks skipped: %s\n", damo_last_error());
    gpt2 = NULL;
  }
  RUN(test_reference_cases);
  RUN(test_reference_corpus_files);
  RUN(test_vocabulary_and_bad_input);
  RUN(test_merge_routines_agree);
  RUN(test_command_line);
  RUN(test_small_vocabulary);
  RUN(test_corrupt_vocabulary_files);
  RUN(test_probe_past_shorter_token);
  damo_bpe_free(gpt2);
  remove_tmpdir();
  return test_summary("test_bpe");
}
