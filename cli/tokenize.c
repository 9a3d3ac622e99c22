/* tokenize.c - `damo tokenize`: GPT-2 BPE on the command line.
 *
 *   damo tokenize --tokenizer gpt2 [--vocab DIR] < text.txt        ids, space separated
 *   damo tokenize --tokenizer gpt2 [--vocab DIR] --decode < ids    the text again
 *   damo tokenize --tokenizer gpt2 [--vocab DIR] FILE...            one line per file:
 *                                                                    FILE<TAB>ids
 * With files, a summary (files, tokens, seconds) goes to stderr; scripts/check_bpe.sh
 * compares these lines with the reference encoder's. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Reads all of f; returns a malloc'd, NUL-terminated buffer (NULL on failure). */
static char *read_all(FILE *f, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n - 1, f);
    if (ferror(f)) break;
    if (feof(f)) {
      buf[n] = '\0';
      *len = n;
      return buf;
    }
    if (n + 1 == cap) {
      char *bigger = realloc(buf, cap * 2);
      if (!bigger) break;
      buf = bigger;
      cap *= 2;
    }
  }
  free(buf);
  return NULL;
}

static char *read_named(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "damo tokenize: %s: cannot open: %s\n", path, strerror(errno));
    return NULL;
  }
  char *text = read_all(f, len);
  fclose(f);
  if (!text) fprintf(stderr, "damo tokenize: %s: cannot read it\n", path);
  return text;
}

static void print_ids(const int32_t *ids, int64_t n) {
  for (int64_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
  putchar('\n');
}

/* Parses whitespace-separated ids; 1 on success, else prints which word is wrong. */
static int parse_ids(const char *text, const char *source, int32_t **ids, int64_t *n) {
  size_t cap = 1024, count = 0;
  int32_t *out = malloc(cap * sizeof *out);
  const char *p = text;
  while (out) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
    if (!*p) break;
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < INT32_MIN || v > INT32_MAX ||
        (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r' && *end != ',')) {
      int word = (int)strcspn(p, " \t\r\n,");
      fprintf(stderr, "damo tokenize: %s: '%.*s' at byte %zu is not an id\n", source, word > 20 ? 20 : word, p,
              (size_t)(p - text));
      free(out);
      return 0;
    }
    if (count == cap) {
      int32_t *bigger = realloc(out, 2 * cap * sizeof *out);
      if (!bigger) break;
      out = bigger;
      cap *= 2;
    }
    out[count++] = (int32_t)v;
    p = end;
  }
  if (!out || *p) {
    free(out);
    fprintf(stderr, "damo tokenize: out of memory\n");
    return 0;
  }
  *ids = out;
  *n = (int64_t)count;
  return 1;
}

/* Encodes or decodes one input; prints the result (prefixed by label and a tab if given). */
static int process(const damo_bpe *bpe, const char *text, size_t len, int decode, const char *source,
                   const char *label, int64_t *tokens) {
  int32_t *ids = NULL;
  int64_t n = 0;
  if (decode) {
    if (!parse_ids(text, source, &ids, &n)) return 0;
    char *out = NULL;
    size_t out_len = 0;
    damo_status st = damo_bpe_decode(bpe, ids, n, &out, &out_len);
    free(ids);
    if (st != DAMO_OK) return !cli_fail(source);
    if (label) printf("%s\t", label);
    fwrite(out, 1, out_len, stdout);
    if (label) putchar('\n');
    free(out);
    *tokens += n;
    return 1;
  }
  if (damo_bpe_encode(bpe, text, len, &ids, &n) != DAMO_OK) return !cli_fail(source);
  if (label) printf("%s\t", label);
  print_ids(ids, n);
  free(ids);
  *tokens += n;
  return 1;
}

int cli_tokenize(int argc, char **argv) {
  const char *tokenizer = NULL, *vocab = NULL;
  int decode = 0, first_file = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
      tokenizer = argv[++i];
    } else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) {
      vocab = argv[++i];
    } else if (!strcmp(argv[i], "--decode")) {
      decode = 1;
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      fprintf(stderr, "damo tokenize: unknown option '%s' (or it needs a value)\n", argv[i]);
      return 2;
    } else if (!first_file) {
      first_file = i;
    }
  }
  if (!tokenizer || strcmp(tokenizer, "gpt2") != 0) {
    fprintf(stderr, "damo tokenize: --tokenizer gpt2 is required (the only tokenizer so far)\n");
    return 2;
  }
  double t0 = now_seconds();
  damo_bpe *bpe = NULL;
  if (damo_bpe_load(vocab, &bpe) != DAMO_OK) return cli_fail("tokenize: loading the GPT-2 vocabulary");
  double t_loaded = now_seconds();
  int64_t tokens = 0;
  int ok = 1, files = 0;
  if (!first_file) {
    size_t len = 0;
    char *text = read_all(stdin, &len);
    if (!text) {
      fprintf(stderr, "damo tokenize: cannot read stdin\n");
      ok = 0;
    } else {
      ok = process(bpe, text, len, decode, "stdin", NULL, &tokens);
    }
    free(text);
  } else {
    for (int i = first_file; i < argc && ok; i++) {
      if (!strcmp(argv[i], "--tokenizer") || !strcmp(argv[i], "--vocab")) {
        i++;
        continue;
      }
      if (!strcmp(argv[i], "--decode")) continue;
      size_t len = 0;
      char *text = read_named(argv[i], &len);
      ok = text && process(bpe, text, len, decode, argv[i], argv[i], &tokens);
      free(text);
      files++;
    }
    fprintf(stderr, "damo tokenize: %d files, %lld tokens, %.3f s (vocabulary load %.3f s)\n", files,
            (long long)tokens, now_seconds() - t_loaded, t_loaded - t0);
  }
  damo_bpe_free(bpe);
  if (fflush(stdout) != 0) return 1;
  return ok ? 0 : 1;
}
