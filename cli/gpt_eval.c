/* gpt_eval.c - damo evaluate of a GPT-2 directory: the mean next-token loss and the
 * perplexity exp(loss) over the validation part of a text, the last 10% of its tokens, which
 * damo train holds out. The part is cut into non-overlapping windows of T + 1 tokens (T
 * predictions each), so every validation token but the first of each window is predicted
 * once; --windows N scores N of them, evenly spaced. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Mean loss of the windows starting at starts[0..n) of ids, in batches of at most B (a
 * second graph for a shorter last batch). */
static damo_status score_windows(damo_gpt2 *m, const int32_t *ids, const int64_t *starts, int64_t n, int64_t T,
                                 int64_t B, double *mean) {
  damo_gpt2_graph *g = NULL;
  int64_t graph_batch = 0;
  int32_t *x = malloc((size_t)(B * T) * sizeof *x), *y = malloc((size_t)(B * T) * sizeof *y);
  damo_status st = x && y ? DAMO_OK : DAMO_ERR_NOMEM;
  double sum = 0;
  for (int64_t first = 0; st == DAMO_OK && first < n; first += B) {
    const int64_t b = n - first < B ? n - first : B;
    if (b != graph_batch) {
      damo_gpt2_graph_free(g);
      g = NULL;
      graph_batch = b;
      if ((st = damo_gpt2_graph_new(m, b, T, 1, &g)) != DAMO_OK) break;
    }
    for (int64_t k = 0; k < b; k++) {
      memcpy(x + k * T, ids + starts[first + k], (size_t)T * sizeof *x);
      memcpy(y + k * T, ids + starts[first + k] + 1, (size_t)T * sizeof *y);
    }
    float loss;
    st = damo_gpt2_graph_evaluate(g, x, y, &loss);
    sum += (double)loss * (double)b; /* the graph's loss is the mean over its b x T predictions */
  }
  damo_gpt2_graph_free(g);
  free(x);
  free(y);
  *mean = n ? sum / (double)n : NAN;
  return st;
}

void cli_gpt2_validation_close(cli_gpt2_validation *v) {
  damo_token_data_free(v->data);
  free(v->starts);
  memset(v, 0, sizeof *v);
}

int cli_gpt2_validation_open(const damo_gpt2 *m, int argc, char **argv, const char *command, cli_gpt2_validation *v) {
  memset(v, 0, sizeof *v);
  const char *spec = cli_opt(argc, argv, "--data"), *o;
  long windows = 0;
  v->B = 4;
  if (((o = cli_opt(argc, argv, "--seq-len")) && !cli_parse_long(o, "--seq-len", 1, 1L << 20, &v->T)) ||
      ((o = cli_opt(argc, argv, "--windows")) && !cli_parse_long(o, "--windows", 1, 1L << 30, &windows)) ||
      ((o = cli_opt(argc, argv, "--batch-size")) && !cli_parse_long(o, "--batch-size", 1, 4096, &v->B)))
    return 2;
  const damo_gpt2_config *c = damo_gpt2_get_config(m);
  if (v->T == 0) v->T = c->n_positions;
  if (v->T > c->n_positions) {
    fprintf(stderr, "damo %s: --seq-len %ld is longer than the model's context (n_positions %d)\n", command, v->T,
            c->n_positions);
    return 2;
  }
  damo_bpe *bpe = NULL;
  int rc = 1;
  if (damo_bpe_load(cli_opt(argc, argv, "--vocab"), &bpe) != DAMO_OK) {
    fprintf(stderr, "damo %s: loading the GPT-2 tokenizer: %s\n", command, damo_last_error());
    goto done;
  }
  if (damo_bpe_vocab_size(bpe) > c->vocab_size) {
    fprintf(stderr, "damo %s: the model's vocab_size %d is smaller than the tokenizer's %d ids\n", command,
            c->vocab_size, damo_bpe_vocab_size(bpe));
    goto done;
  }
  if (damo_token_data_load(spec, bpe, &v->data) != DAMO_OK) {
    rc = cli_fail(command);
    goto done;
  }
  const int64_t n_val = v->data->n_tokens - v->data->n_train, total = (n_val - 1) / v->T;
  if (total < 1) {
    fprintf(stderr, "damo %s: the validation part of %s holds %lld tokens, fewer than a window of %ld + 1; give "
            "a smaller --seq-len\n", command, spec, (long long)n_val, v->T);
    goto done;
  }
  v->n = windows > 0 && windows < total ? windows : total;
  if (!(v->starts = malloc((size_t)v->n * sizeof *v->starts))) goto done;
  for (int64_t k = 0; k < v->n; k++) v->starts[k] = v->data->n_train + k * total / v->n * v->T;
  char of[64] = "";
  if (v->n < total) snprintf(of, sizeof of, ", evenly spaced among its %lld", (long long)total);
  snprintf(v->desc, sizeof v->desc, "the validation part of %s, the last 10%% of its %lld tokens (%lld tokens from id "
           "%lld on), as damo train holds it out: %lld windows of %ld tokens (%lld predictions)%s", spec,
           (long long)v->data->n_tokens, (long long)n_val, (long long)v->data->n_train, (long long)v->n, v->T,
           (long long)(v->n * v->T), of);
  rc = 0;
done:
  damo_bpe_free(bpe);
  if (rc) cli_gpt2_validation_close(v);
  return rc;
}

int cli_gpt2_validation_score(damo_gpt2 *m, const cli_gpt2_validation *v, const char *command, double *loss) {
  return score_windows(m, v->data->ids, v->starts, v->n, v->T, v->B, loss) == DAMO_OK ? 0 : cli_fail(command);
}

int cli_evaluate_gpt2(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *spec = cli_opt(argc, argv, "--data");
  if (!dir || !spec) {
    fprintf(stderr, "damo evaluate: --model DIR and --data moby-dick|sotu|FILE are required\n");
    return 2;
  }
  damo_gpt2 *m = NULL;
  if (damo_gpt2_load(dir, &m) != DAMO_OK) return cli_fail("evaluate");
  const damo_gpt2_config *c = damo_gpt2_get_config(m);
  double loss;
  cli_gpt2_validation v;
  int rc = cli_gpt2_validation_open(m, argc, argv, "evaluate", &v);
  if (rc == 0 && (rc = cli_gpt2_validation_score(m, &v, "evaluate", &loss)) == 0) {
    printf("GPT-2 %s: %d layers, %d heads, width %d, context %d: %lld parameters%s%s\n", dir, c->n_layer, c->n_head,
           c->n_embd, c->n_positions, (long long)damo_gpt2_num_params(m),
           damo_gpt2_block_format(m) ? ", weights in blocks " : "",
           damo_gpt2_block_format(m) ? damo_block_format_name(damo_gpt2_block_format(m)) : "");
    printf("scored: %s\n", v.desc);
    printf("val loss: %.4f - perplexity: %.3f\n", loss, exp(loss));
  }
  cli_gpt2_validation_close(&v);
  damo_gpt2_free(m);
  return rc;
}
