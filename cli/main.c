/* main.c - the `damo` command line: a thin layer over the public API (damo.h only).
 *
 *   damo info
 *   damo train     --config model.json --data SPEC [--epochs N --batch-size B --lr X --seed S --out DIR ...]
 *   damo evaluate  --model DIR --data SPEC
 *   damo predict   --model DIR --input x.npy [--output y.npy --labels y.npy]
 *   damo summary   --model DIR | --config model.json
 *   damo export    --data SPEC [--split test] --x x.npy [--y y.npy]
 *   damo bench     peak | gemm M N K ... | fit --config FILE --init DIR   (cli/bench.c, make bench)
 *
 * SPEC is a built-in data set name (fashion-mnist), a CSV file (label column "label" unless
 * --label-column says otherwise) or an "x.npy,y.npy" pair. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

double cli_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *cli_opt(int argc, char **argv, const char *name) {
  for (int i = 2; i < argc - 1; i++)
    if (!strcmp(argv[i], name)) return argv[i + 1];
  return NULL;
}

int cli_flag(int argc, char **argv, const char *name) {
  for (int i = 2; i < argc; i++)
    if (!strcmp(argv[i], name)) return 1;
  return 0;
}

int cli_check_options(int argc, char **argv, const char *const *known_with_value, const char *const *known_flags) {
  for (int i = 2; i < argc; i++) {
    int ok = 0;
    for (const char *const *k = known_with_value; k && *k && !ok; k++)
      if (!strcmp(argv[i], *k)) {
        if (i + 1 >= argc) {
          fprintf(stderr, "damo %s: option %s needs a value\n", argv[1], argv[i]);
          return 0;
        }
        ok = 1;
        i++;
      }
    for (const char *const *k = known_flags; k && *k && !ok; k++) ok = !strcmp(argv[i], *k);
    if (!ok) {
      fprintf(stderr, "damo %s: unknown option '%s' (see damo help)\n", argv[1], argv[i]);
      return 0;
    }
  }
  return 1;
}

int cli_fail(const char *what) {
  /* The library names its function ("predict: x has shape ..."): no "predict: predict:". */
  const char *msg = damo_last_error();
  size_t n = strlen(what);
  if (!strncmp(msg, what, n) && msg[n] == ':') fprintf(stderr, "damo: %s\n", msg);
  else fprintf(stderr, "damo: %s: %s\n", what, msg);
  return 1;
}

int cli_parse_long(const char *s, const char *name, long lo, long hi, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "damo: %s must be an integer in [%ld, %ld], got '%s'\n", name, lo, hi, s);
    return 0;
  }
  *out = v;
  return 1;
}

int cli_parse_double(const char *s, const char *name, double lo, int lo_open, double hi, double *out) {
  char *end;
  double v = strtod(s, &end);
  int in_range = (lo_open ? v > lo : v >= lo) && v <= hi;
  if (*s == '\0' || *end != '\0' || v != v || !in_range) {
    char high[32];
    if (hi == HUGE_VAL) snprintf(high, sizeof high, "inf)");
    else snprintf(high, sizeof high, "%g]", hi);
    fprintf(stderr, "damo: %s must be a number in %c%g, %s, got '%s'\n", name, lo_open ? '(' : '[', lo, high, s);
    return 0;
  }
  *out = v;
  return 1;
}

void cli_warn_warmup(int64_t steps, int64_t warmup_steps) {
  if (warmup_steps > steps)
    fprintf(stderr, "damo train: warning: the warm-up (%lld steps) is longer than the run (%lld steps): the learning "
            "rate never reaches its peak\n", (long long)warmup_steps, (long long)steps);
}

static int usage(FILE *f) {
  fprintf(f,
          "usage: damo COMMAND [options]\n\n"
          "commands:\n"
          "  info                                   version, SIMD path, threads\n"
          "  train    --config FILE --data SPEC      train a model; saves it to --out DIR\n"
          "           [--epochs N] [--batch-size B] [--lr X] [--seed S] [--out DIR]\n"
          "           [--validation-split F] [--patience P] [--verbose 0|1|2] [--history FILE]\n"
          "  evaluate --model DIR --data SPEC        loss and accuracy on the test split\n"
          "  predict  --model DIR --input x.npy      class probabilities (or outputs)\n"
          "           [--output y.npy] [--labels y.npy]\n"
          "  summary  --model DIR | --config FILE    the layer table\n"
          "  export   --data SPEC [--split train|test] --x x.npy [--y y.npy]\n"
          "  bench    peak | gemm M N K ... | fit|gpt2|bert --config FILE --init DIR   damo's side of make bench\n"
          "  tokenize --tokenizer gpt2 [--vocab DIR] [--decode] [FILE...]   text <-> GPT-2 ids (stdin)\n"
          "  tokenize --tokenizer bert [--vocab FILE] [--decode | --max-len N [--pair FILE2 | --head-tokens H]]\n"
          "           [FILE...]                     text <-> BERT WordPiece ids, or model inputs\n"
          "  train    --config bert.json [--pretrain] --data SPEC[,SPEC] --out DIR [--init DIR]   BERT\n"
          "           (model_type bert): masked-LM pre-training, or fine-tuning the classifier\n"
          "           [--steps N | --epochs N, --batch-size B --seq-len T --lr X --warmup-steps W --seed S\n"
          "            --predictions P (pre-training) | --head-tokens H (fine-tuning) --vocab FILE]\n"
          "  train    --config gpt.json --data moby-dick|sotu|FILE --out DIR   GPT-2 (model_type gpt2)\n"
          "           [--steps N --batch-size B --seq-len T --lr X --seed S --grad-accum K\n"
          "            --eval-every N --log-every N --checkpoint-every N --vocab DIR --resume]\n"
          "  generate --model DIR --prompt TEXT [--max-new-tokens N --temperature T (0 = greedy)\n"
          "           --top-k K --top-p P --seed S --vocab DIR]   sample from a GPT-2 directory\n\n"
          "SPEC: fashion-mnist | file.csv (label column 'label', or --label-column NAME) | x.npy,y.npy\n"
          "Environment: DAMO_NUM_THREADS, DAMO_SIMD=scalar|avx2|avx512, DAMO_DATA_DIR\n");
  return f == stderr ? 2 : 0;
}

/* "--opt=value" becomes "--opt" "value", so every command takes both spellings. The
 * strings point into the original argv (cut at the '=' in place); the array lives as long
 * as the process (held by a static, so leak checkers see it reachable). */
static char **split_argv;

static char **split_equals(int *argc, char **argv) {
  char **out = split_argv = malloc((size_t)(2 * *argc + 1) * sizeof *out);
  if (!out) return argv;
  int n = 0;
  for (int i = 0; i < *argc; i++) {
    char *eq = i >= 2 && !strncmp(argv[i], "--", 2) ? strchr(argv[i], '=') : NULL;
    out[n++] = argv[i];
    if (eq) {
      *eq = '\0';
      out[n++] = eq + 1;
    }
  }
  out[n] = NULL;
  *argc = n;
  return out;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage(stderr);
  argv = split_equals(&argc, argv);
  const char *cmd = argv[1];
  if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) return usage(stdout);
  if (!strcmp(cmd, "info") || !strcmp(cmd, "--version")) {
    printf("%s\n", damo_info_string());
    return 0;
  }
  if (!strcmp(cmd, "train")) return cli_train(argc, argv);
  if (!strcmp(cmd, "evaluate")) return cli_evaluate(argc, argv);
  if (!strcmp(cmd, "predict")) return cli_predict(argc, argv);
  if (!strcmp(cmd, "summary")) return cli_summary(argc, argv);
  if (!strcmp(cmd, "export")) return cli_export(argc, argv);
  if (!strcmp(cmd, "bench")) return cli_bench(argc, argv);
  if (!strcmp(cmd, "tokenize")) return cli_tokenize(argc, argv);
  if (!strcmp(cmd, "generate")) return cli_generate(argc, argv);
  fprintf(stderr, "damo: unknown command '%s'\n\n", cmd);
  return usage(stderr);
}
