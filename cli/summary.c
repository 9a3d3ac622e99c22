/* summary.c - damo summary of GPT-2 and BERT models (a directory, or a config freshly
 * initialised): one row per layer (the tensors sharing a name before ".weight" / ".bias",
 * under HuggingFace's names) with what it does, its output shape per sequence of T tokens
 * and its parameter count; the total is the library's count (every tensor is in a row). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct layer_style {
  const char *suffix; /* the end of a layer's name */
  const char *what;   /* may hold one %d: heads */
  char dim;           /* output width: C H (model width), 3 (3C), 4 (4C), I (inner), V (vocab), L (labels),
                         P (one vector per sequence, H wide) */
} layer_style;

static const layer_style gpt2_styles[] = {
    {"wte", "token embedding (the LM head shares it)", 'C'},
    {"wpe", "position embedding", 'C'},
    {"ln_1", "LayerNorm", 'C'},
    {"ln_2", "LayerNorm", 'C'},
    {"ln_f", "final LayerNorm", 'C'},
    {"attn.c_attn", "attention q, k, v (%d heads, causal)", '3'},
    {"attn.c_proj", "attention output projection", 'C'},
    {"mlp.c_fc", "MLP in, GELU", '4'},
    {"mlp.c_proj", "MLP out", 'C'},
    {NULL, NULL, 0}};

static const layer_style bert_styles[] = {
    {"word_embeddings", "token embedding (the masked-LM head shares it)", 'H'},
    {"position_embeddings", "position embedding", 'H'},
    {"token_type_embeddings", "token-type embedding", 'H'},
    {"embeddings.LayerNorm", "LayerNorm of the embeddings' sum", 'H'},
    {"attention.self.query", "attention query (%d heads)", 'H'},
    {"attention.self.key", "attention key", 'H'},
    {"attention.self.value", "attention value", 'H'},
    {"attention.output.dense", "attention output projection", 'H'},
    {"attention.output.LayerNorm", "LayerNorm after the attention", 'H'},
    {"intermediate.dense", "feed-forward in, GELU", 'I'},
    {"output.dense", "feed-forward out", 'H'},
    {"output.LayerNorm", "LayerNorm after the feed-forward", 'H'},
    {"pooler.dense", "pooler: tanh of the [CLS] position", 'P'},
    {"classifier", "classifier logits", 'L'},
    {"transform.dense", "masked-LM transform, GELU", 'H'},
    {"transform.LayerNorm", "masked-LM LayerNorm", 'H'},
    {"cls.predictions", "masked-LM logits (bias; weights: the token embedding)", 'V'},
    {NULL, NULL, 0}};

/* The sizes the output shapes are written with. */
typedef struct dims {
  int width, inner, vocab, labels, heads;
} dims;

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

static void print_row(const char *layer, const layer_style *styles, const dims *d, int64_t params, int marked) {
  const layer_style *st = styles;
  while (st->suffix && !ends_with(layer, st->suffix)) st++;
  char what[96] = "", shape[32] = "";
  if (st->suffix) {
    snprintf(what, sizeof what, st->what, d->heads);
    int w = st->dim == '3' ? 3 * d->width : st->dim == '4' ? 4 * d->width : st->dim == 'I' ? d->inner
          : st->dim == 'V' ? d->vocab : st->dim == 'L' ? d->labels : d->width;
    if (st->dim == 'P' || st->dim == 'L') snprintf(shape, sizeof shape, "(%d)", w);
    else snprintf(shape, sizeof shape, "(T, %d)", w);
  }
  printf("%-44s %-54s %-12s %11lld%s\n", layer, what, shape, (long long)params, marked ? " *" : "");
}

/* The table over tensors names[0..n) of counts[i] parameters; loaded (may be NULL) marks the
 * tensors read from the directory. Returns the total. */
static int64_t print_table(int n, const char *const *names, const int64_t *counts, const int *loaded,
                           const layer_style *styles, const dims *d) {
  printf("%-44s %-54s %-12s %11s\n", "Layer (HuggingFace name)", "What", "Output shape", "Param #");
  for (int k = 0; k < 124; k++) putchar('=');
  putchar('\n');
  int64_t total = 0;
  for (int i = 0; i < n;) {
    char layer[160];
    snprintf(layer, sizeof layer, "%s", names[i]);
    char *dot = strrchr(layer, '.');
    if (dot && (!strcmp(dot, ".weight") || !strcmp(dot, ".bias"))) *dot = '\0';
    int64_t params = 0;
    int j = i, missing = 0;
    for (; j < n; j++) { /* the consecutive tensors of this layer */
      size_t k = strlen(layer);
      if (strncmp(names[j], layer, k) || (names[j][k] && strcmp(names[j] + k, ".weight") && strcmp(names[j] + k, ".bias")))
        break;
      params += counts[j];
      missing |= loaded && !loaded[j];
    }
    print_row(layer, styles, d, params, missing);
    total += params;
    i = j;
  }
  return total;
}

/* --model DIR or --config FILE; 0 after the message. */
static const char *model_source(int argc, char **argv, const char **config) {
  const char *dir = cli_opt(argc, argv, "--model");
  *config = cli_opt(argc, argv, "--config");
  if (!dir == !*config) fprintf(stderr, "damo summary: give --model DIR or --config FILE\n");
  return dir;
}

int cli_summary_gpt2(int argc, char **argv) {
  const char *config, *dir = model_source(argc, argv, &config);
  if (!dir == !config) return 2;
  damo_gpt2 *m = NULL;
  damo_gpt2_config cfg;
  if ((dir ? damo_gpt2_load(dir, &m)
           : damo_gpt2_config_load(config, &cfg) == DAMO_OK ? damo_gpt2_new(&cfg, 0, &m) : DAMO_ERR_FORMAT) != DAMO_OK)
    return cli_fail("summary");
  const damo_gpt2_config *c = damo_gpt2_get_config(m);
  const int n = damo_gpt2_num_tensors(m);
  const char **names = malloc((size_t)n * sizeof *names);
  int64_t *counts = malloc((size_t)n * sizeof *counts);
  if (!names || !counts) {
    free(names), free(counts), damo_gpt2_free(m);
    fprintf(stderr, "damo summary: out of memory\n");
    return 1;
  }
  for (int i = 0; i < n; i++) {
    names[i] = damo_gpt2_tensor_name(m, i);
    counts[i] = damo_tensor_numel(damo_gpt2_param(m, names[i]));
  }
  printf("GPT-2 %s: %d blocks, %d heads of %d, width %d, context %d, vocab %d (T: tokens in, up to %d)\n",
         dir ? dir : config, c->n_layer, c->n_head, c->n_embd / c->n_head, c->n_embd, c->n_positions, c->vocab_size,
         c->n_positions);
  const dims d = {c->n_embd, 4 * c->n_embd, c->vocab_size, 0, c->n_head};
  int64_t total = print_table(n, names, counts, NULL, gpt2_styles, &d);
  char logits[32];
  snprintf(logits, sizeof logits, "(T, %d)", c->vocab_size);
  printf("%-44s %-54s %-12s %11d\n", "lm_head", "next-token logits (the token embedding's weights)", logits, 0);
  printf("Total params: %lld\n", (long long)total);
  if (damo_gpt2_block_format(m))
    printf("Weights: every matrix in %s blocks of %d (bf16 scales); biases and layer norms f32\n",
           damo_block_format_name(damo_gpt2_block_format(m)), DAMO_BLOCK_SIZE);
  if (damo_gpt2_is_int8(m))
    printf("Weights: dynamic int8 (the layers' matrices per output column, wte and wpe per row; inputs quantised per "
           "batch); biases, layer norms and attention f32\n");
  free(names);
  free(counts);
  damo_gpt2_free(m);
  return dir && !cli_privacy_show(dir) ? 1 : 0;
}

int cli_summary_bert(int argc, char **argv) {
  const char *config, *dir = model_source(argc, argv, &config);
  if (!dir == !config) return 2;
  damo_bert *m = NULL;
  damo_bert_config cfg;
  if ((dir ? damo_bert_load(dir, 0, 0, &m)
           : damo_bert_config_load(config, &cfg) == DAMO_OK ? damo_bert_new(&cfg, 0, &m) : DAMO_ERR_FORMAT) != DAMO_OK)
    return cli_fail("summary");
  const damo_bert_config *c = damo_bert_get_config(m);
  const int n = damo_bert_num_tensors(m);
  const char **names = malloc((size_t)n * sizeof *names);
  int64_t *counts = malloc((size_t)n * sizeof *counts);
  int *loaded = malloc((size_t)n * sizeof *loaded), any_missing = 0;
  if (!names || !counts || !loaded) {
    free(names), free(counts), free(loaded), damo_bert_free(m);
    fprintf(stderr, "damo summary: out of memory\n");
    return 1;
  }
  for (int i = 0; i < n; i++) {
    names[i] = damo_bert_tensor_name(m, i);
    counts[i] = damo_tensor_numel(damo_bert_param(m, names[i]));
    loaded[i] = !dir || damo_bert_tensor_loaded(m, i);
    any_missing |= !loaded[i];
  }
  printf("BERT %s: %d layers, %d heads of %d, width %d, inner %d, vocab %d, %d labels (T: tokens in, up to %d)\n",
         dir ? dir : config, c->num_hidden_layers, c->num_attention_heads, c->hidden_size / c->num_attention_heads,
         c->hidden_size, c->intermediate_size, c->vocab_size, c->num_labels, c->max_position_embeddings);
  const dims d = {c->hidden_size, c->intermediate_size, c->vocab_size, c->num_labels, c->num_attention_heads};
  int64_t total = print_table(n, names, counts, loaded, bert_styles, &d);
  printf("Total params: %lld\n", (long long)total);
  if (any_missing) printf("* not in %s: a head it was not saved with, initialised when loaded\n", dir);
  free(names);
  free(counts);
  free(loaded);
  damo_bert_free(m);
  return dir && !cli_privacy_show(dir) ? 1 : 0;
}
