/* tokenize.c - `damo tokenize`: GPT-2 BPE and BERT WordPiece on the command line.
 *
 *   damo tokenize --tokenizer gpt2|bert [--vocab V] < text.txt        ids, space separated
 *   damo tokenize --tokenizer gpt2|bert [--vocab V] --decode < ids    the text again
 *   damo tokenize --tokenizer gpt2|bert [--vocab V] FILE...            one line per file:
 *                                                                      FILE<TAB>ids
 *   damo tokenize --tokenizer bert --max-len N [--pair FILE2] [FILE...]
 *       BERT model inputs: [CLS] text [SEP] (FILE2's text [SEP]), truncated longest-first
 *       and padded to N, printed as ids<TAB>token types<TAB>attention mask (after FILE<TAB>)
 *   damo tokenize --tokenizer bert --max-len N --head-tokens H [FILE...]
 *       the same for one text cut head+tail as BERT fine-tuning does: a text longer than N - 2
 *       tokens keeps its first H and last N - 2 - H
 * V is GPT-2's folder (encoder.json, vocab.bpe) or BERT's vocab.txt / npm vocab.json.
 * --pair alone pads to 512, bert-base-uncased's positions. With files, a summary (files,
 * tokens, seconds) goes to stderr; scripts/check_bpe.sh and scripts/check_wordpiece.sh
 * compare these lines with the reference tokenizers'. */
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

/* The loaded tokenizer and the options that shape its output. */
typedef struct tokenizer {
  damo_bpe *bpe;          /* --tokenizer gpt2 */
  damo_wordpiece *wp;     /* --tokenizer bert */
  int max_len;            /* bert: > 0 prints model inputs of this length */
  const char *pair;       /* bert: the second text of each pair (NUL-terminated), or NULL */
  int head;               /* bert with max_len: head+tail truncation keeping this many first
                             tokens; -1 keeps only the first (longest-first for pairs) */
} tokenizer;

static void print_row(const int32_t *v, int n) {
  for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", v[i]);
}

/* BERT model inputs of one text: ids, token types and mask, tab-separated on one line. */
static int encode_inputs(const tokenizer *t, const char *text, const char *source, const char *label,
                         int64_t *tokens) {
  size_t n = (size_t)t->max_len;
  int32_t *buf = malloc(3 * n * sizeof *buf);
  if (!buf) {
    fprintf(stderr, "damo tokenize: out of memory\n");
    return 0;
  }
  int used = 0;
  damo_status st = t->head >= 0
                       ? damo_wordpiece_encode_head_tail(t->wp, text, t->max_len, t->head, buf, buf + n, buf + 2 * n, &used)
                       : damo_wordpiece_encode(t->wp, text, t->pair, t->max_len, buf, buf + n, buf + 2 * n, &used);
  if (st != DAMO_OK) {
    free(buf);
    return !cli_fail(source);
  }
  if (label) printf("%s\t", label);
  for (int k = 0; k < 3; k++) {
    if (k) putchar('\t');
    print_row(buf + (size_t)k * n, t->max_len);
  }
  putchar('\n');
  *tokens += used;
  free(buf);
  return 1;
}

/* Encodes or decodes one input; prints the result (prefixed by label and a tab if given). */
static int process(const tokenizer *t, const char *text, size_t len, int decode, const char *source,
                   const char *label, int64_t *tokens) {
  int32_t *ids = NULL;
  int64_t n = 0;
  if (decode) {
    if (!parse_ids(text, source, &ids, &n)) return 0;
    char *out = NULL;
    size_t out_len = 0;
    damo_status st =
        t->bpe ? damo_bpe_decode(t->bpe, ids, n, &out, &out_len) : damo_wordpiece_decode(t->wp, ids, n, &out);
    free(ids);
    if (st != DAMO_OK) return !cli_fail(source);
    if (t->wp) out_len = strlen(out);
    if (label) printf("%s\t", label);
    fwrite(out, 1, out_len, stdout);
    if (label || t->wp) putchar('\n');
    free(out);
    *tokens += n;
    return 1;
  }
  if (t->max_len > 0) return encode_inputs(t, text, source, label, tokens);
  damo_status st =
      t->bpe ? damo_bpe_encode(t->bpe, text, len, &ids, &n) : damo_wordpiece_tokenize(t->wp, text, len, &ids, &n);
  if (st != DAMO_OK) return !cli_fail(source);
  if (label) printf("%s\t", label);
  print_ids(ids, n);
  free(ids);
  *tokens += n;
  return 1;
}

int cli_tokenize(int argc, char **argv) {
  const char *name = NULL, *vocab = NULL, *max_len_arg = NULL, *pair_path = NULL, *head_arg = NULL;
  int decode = 0, n_files = 0;
  char **files = calloc((size_t)argc, sizeof *files);
  if (!files) return 1;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
      name = argv[++i];
    } else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) {
      vocab = argv[++i];
    } else if (!strcmp(argv[i], "--max-len") && i + 1 < argc) {
      max_len_arg = argv[++i];
    } else if (!strcmp(argv[i], "--head-tokens") && i + 1 < argc) {
      head_arg = argv[++i];
    } else if (!strcmp(argv[i], "--pair") && i + 1 < argc) {
      pair_path = argv[++i];
    } else if (!strcmp(argv[i], "--decode")) {
      decode = 1;
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      fprintf(stderr, "damo tokenize: unknown option '%s' (or it needs a value)\n", argv[i]);
      free(files);
      return 2;
    } else {
      files[n_files++] = argv[i];
    }
  }
  int bert = name && !strcmp(name, "bert");
  const char *problem = NULL;
  if (!name || (strcmp(name, "gpt2") != 0 && !bert)) problem = "--tokenizer gpt2 or --tokenizer bert is required";
  else if (!bert && (max_len_arg || pair_path)) problem = "--max-len and --pair are for --tokenizer bert";
  else if (decode && (max_len_arg || pair_path)) problem = "--decode takes no --max-len or --pair";
  else if (head_arg && (!max_len_arg || pair_path)) problem = "--head-tokens needs --max-len and no --pair";
  tokenizer t = {0};
  long max_len = 0, head = -1;
  if (problem) fprintf(stderr, "damo tokenize: %s\n", problem);
  if (problem || (max_len_arg && !cli_parse_long(max_len_arg, "--max-len", 3, 1000000, &max_len)) ||
      (head_arg && !cli_parse_long(head_arg, "--head-tokens", 0, max_len - 2, &head))) {
    free(files);
    return 2;
  }
  t.max_len = (int)max_len;
  t.head = (int)head;
  if (pair_path && !t.max_len) t.max_len = 512;
  char *pair_text = NULL;
  if (pair_path) {
    size_t pair_len;
    pair_text = read_named(pair_path, &pair_len);
    if (!pair_text) {
      free(files);
      return 1;
    }
    t.pair = pair_text;
  }
  double t0 = now_seconds();
  damo_status st = bert ? damo_wordpiece_load(vocab, &t.wp) : damo_bpe_load(vocab, &t.bpe);
  if (st != DAMO_OK) {
    free(files);
    free(pair_text);
    return cli_fail(bert ? "tokenize: loading the BERT vocabulary" : "tokenize: loading the GPT-2 vocabulary");
  }
  double t_loaded = now_seconds();
  int64_t tokens = 0;
  int ok = 1;
  if (!n_files) {
    size_t len = 0;
    char *text = read_all(stdin, &len);
    if (!text) {
      fprintf(stderr, "damo tokenize: cannot read stdin\n");
      ok = 0;
    } else {
      ok = process(&t, text, len, decode, "stdin", NULL, &tokens);
    }
    free(text);
  } else {
    int done = 0;
    for (int i = 0; i < n_files && ok; i++, done++) {
      size_t len = 0;
      char *text = read_named(files[i], &len);
      ok = text && process(&t, text, len, decode, files[i], files[i], &tokens);
      free(text);
    }
    fprintf(stderr, "damo tokenize: %d files, %lld tokens, %.3f s (vocabulary load %.3f s)\n", done,
            (long long)tokens, now_seconds() - t_loaded, t_loaded - t0);
  }
  damo_bpe_free(t.bpe);
  damo_wordpiece_free(t.wp);
  free(pair_text);
  free(files);
  if (fflush(stdout) != 0) return 1;
  return ok ? 0 : 1;
}
