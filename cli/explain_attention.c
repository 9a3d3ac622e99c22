/* explain_attention.c - `damo explain` for transformers. BERT (a fine-tuned directory, one
 * mail): the class it gives, every layer's and head's attention as one PNG grid, a
 * self-contained HTML head view (pick a layer and a head, or their mean; lines from each token
 * to those it attends to), and attention rollout from [CLS] (which input tokens flow into the
 * classifier's input). GPT-2 (a prompt): the same maps, and how much each prompt token
 * contributes to the log-probability of the next token (Integrated Gradients at the input
 * embeddings). */
#include "bert_text.h"
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ pictures and pages */

/* maps (L, H, T, T), the first n tokens of each, as a grid: a row per layer, a column per head,
 * each cell n x n pixels scaled up, white 0 to dark blue 1. */
static int maps_png(const char *path, const char *title, const float *maps, int L, int H, int64_t T, int64_t n) {
  const int s = n >= 96 ? 1 : (int)((96 + n - 1) / n), cell = (int)n * s, gap = 6, left = 64, top = 44;
  const int64_t grid_w = left + H * (cell + gap) + gap, title_w = 12 * (int64_t)strlen(title) + 2 * gap;
  const int64_t shape[3] = {top + L * (cell + gap) + gap, grid_w > title_w ? grid_w : title_w, 3};
  damo_tensor *img = damo_tensor_new(DAMO_F32, 3, shape);
  if (!img) return !cli_fail("explain");
  float *p = damo_tensor_f32(img);
  const int64_t W = shape[1];
  for (int64_t i = 0; i < damo_tensor_numel(img); i++) p[i] = 255;
  const float ink[3] = {30, 30, 40};
  damo_image_draw_text(img, gap, 8, title, 2, ink);
  char label[32];
  for (int h = 0; h < H; h++) {
    snprintf(label, sizeof label, "head %d", h);
    damo_image_draw_text(img, left + h * (cell + gap), top - 14, label, 1, ink);
  }
  for (int l = 0; l < L; l++) {
    snprintf(label, sizeof label, "layer %d", l);
    damo_image_draw_text(img, 4, top + l * (cell + gap) + cell / 2 - 4, label, 1, ink);
    for (int h = 0; h < H; h++)
      for (int64_t i = 0; i < n * s; i++)
        for (int64_t j = 0; j < n * s; j++) {
          const float v = maps[(((int64_t)l * H + h) * T + i / s) * T + j / s];
          float *q = p + ((top + l * (cell + gap) + i) * W + left + h * (cell + gap) + j) * 3;
          const float a = fminf(fmaxf(v, 0.0f), 1.0f);
          q[0] = 255 - a * 235, q[1] = 255 - a * 200, q[2] = 255 - a * 100;
        }
  }
  const damo_status st = damo_image_save_png(path, img);
  damo_tensor_free(img);
  return st == DAMO_OK || !cli_fail("explain");
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    const unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else if (c == '<') fputs("\\u003c", f);
    else fputc(c, f);
  }
  fputc('"', f);
}

/* A head view: the tokens in two columns, a line from token i (left) to j (right) as dark as
 * the attention i pays j, for the layer and head picked (or the heads' mean). */
static int head_view_html(const char *path, const char *title, char (*tokens)[32], const float *maps, int L, int H,
                          int64_t T, int64_t n) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "damo explain: cannot write %s\n", path);
    return 0;
  }
  fprintf(f, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>damo explain: attention</title>\n<style>"
             "body{font:14px system-ui,sans-serif;margin:20px;color:#1d2330}svg text{font:13px ui-monospace,monospace}"
             "select{font:inherit;margin-right:12px}</style></head><body>\n<h3 id=\"title\"></h3>\n<p>layer <select "
             "id=\"layer\"></select> head <select id=\"head\"></select> (hover a token to see only its row)</p>\n"
             "<svg id=\"view\" width=\"520\"></svg>\n<script>\nconst D = {\"title\": ");
  json_string(f, title);
  fprintf(f, ", \"layers\": %d, \"heads\": %d, \"tokens\": [", L, H);
  for (int64_t i = 0; i < n; i++) {
    if (i) fputc(',', f);
    json_string(f, tokens[i]);
  }
  fprintf(f, "], \"maps\": [");
  for (int l = 0; l < L; l++)
    for (int h = 0; h < H; h++)
      for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
          fprintf(f, "%s%.3g", l || h || i || j ? "," : "", (double)maps[(((int64_t)l * H + h) * T + i) * T + j]);
  fprintf(f, "]};\n"
             "const n = D.tokens.length, row = 20, svg = document.getElementById('view');\n"
             "document.getElementById('title').textContent = D.title;\n"
             "const ls = document.getElementById('layer'), hs = document.getElementById('head');\n"
             "for (let l = 0; l < D.layers; l++) ls.add(new Option(l, l));\n"
             "hs.add(new Option('mean', -1)); for (let h = 0; h < D.heads; h++) hs.add(new Option(h, h));\n"
             "let focus = -1;\n"
             "function at(l, h, i, j) { if (h >= 0) return D.maps[((l * D.heads + h) * n + i) * n + j];\n"
             "  let s = 0; for (let k = 0; k < D.heads; k++) s += D.maps[((l * D.heads + k) * n + i) * n + j];"
             " return s / D.heads; }\n"
             "function draw() { const l = +ls.value, h = +hs.value; svg.setAttribute('height', n * row + 10);\n"
             "  let s = '';\n"
             "  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { if (focus >= 0 && i != focus) continue;\n"
             "    const a = at(l, h, i, j); if (a < 0.01) continue;\n"
             "    s += `<line x1=\"170\" y1=\"${i * row + 14}\" x2=\"350\" y2=\"${j * row + 14}\" stroke=\"#2040c0\""
             " stroke-opacity=\"${a.toFixed(3)}\" stroke-width=\"2\"/>`; }\n"
             "  for (let i = 0; i < n; i++) { const t = D.tokens[i].replace(/&/g, '&amp;').replace(/</g, '&lt;');\n"
             "    s += `<text x=\"160\" y=\"${i * row + 18}\" text-anchor=\"end\" data-i=\"${i}\">${t}</text>`;\n"
             "    s += `<text x=\"360\" y=\"${i * row + 18}\">${t}</text>`; }\n"
             "  svg.innerHTML = s; }\n"
             "svg.addEventListener('mouseover', e => { const i = e.target.dataset ? e.target.dataset.i : undefined;"
             " focus = i === undefined ? -1 : +i; draw(); });\n"
             "svg.addEventListener('mouseleave', () => { focus = -1; draw(); });\n"
             "ls.onchange = hs.onchange = draw; draw();\n</script></body></html>\n");
  return fclose(f) == 0 || (fprintf(stderr, "damo explain: cannot write %s\n", path), 0);
}

/* Prints the k largest of v[0..n) (skipping skip[i]) with their tokens. */
static void print_top(const char *what, const float *v, char (*tokens)[32], int64_t n, const int *skip, int k) {
  int *used = calloc((size_t)n + 1, sizeof *used);
  printf("  %s:", what);
  for (int r = 0; used && r < k; r++) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
      if (!used[i] && !(skip && skip[i]) && (best < 0 || v[i] > v[best])) best = i;
    if (best < 0) break;
    used[best] = 1;
    printf(" %s (%.3f)", tokens[best], (double)v[best]);
  }
  printf("\n");
  free(used);
}

/* ------------------------------------------------------------------ BERT */

/* --data SPEC --faithfulness N: the deletion test over tokens. For N test texts, the tokens
 * most attributed to the predicted class (IG from the [PAD] text) are removed (made [PAD] and
 * masked out), 0 to 50% of each text's tokens besides [CLS] and [SEP], against a random order;
 * the predicted class's mean probability is printed for both. */
static int bert_faithfulness(damo_bert *m, const damo_wordpiece *wp, int T, int head, int argc, char **argv, long steps) {
  enum { STEPS = CLI_DELETION_STEPS };
  cli_deletion d;
  if (!cli_deletion_begin(&d, argc, argv)) return 2;
  damo_text_dataset *data = NULL;
  encoded_split sp[3] = {{0}};
  if (!cli_bert_load_encoded(d.spec, wp, T, head, &data, sp, DAMO_SPLIT_TEST)) return 1;
  const encoded_split *e = &sp[DAMO_SPLIT_TEST];
  const int L = damo_bert_get_config(m)->num_labels;
  const int32_t pad = damo_wordpiece_token_id(wp, "[PAD]"), cls_id = damo_wordpiece_token_id(wp, "[CLS]"),
                sep_id = damo_wordpiece_token_id(wp, "[SEP]");
  const long n = d.n < e->n ? d.n : (long)e->n;
  damo_bert_graph *g = NULL;
  int32_t *rows = malloc((size_t)(3 * 2 * STEPS * T) * sizeof *rows), *base = malloc((size_t)T * sizeof *base);
  int64_t *order = malloc((size_t)(2 * T) * sizeof *order);
  float *attr = malloc((size_t)T * sizeof *attr), *probs = malloc((size_t)(2 * STEPS * L) * sizeof *probs);
  int rc = 1;
  if (!rows || !base || !order || !attr || !probs || damo_bert_classifier_new(m, 2 * STEPS, T, 0, &g) != DAMO_OK) {
    cli_fail("explain");
    goto done;
  }
  for (long i = 0; i < n; i++) {
    const int64_t r = i * (e->n / n);
    const int32_t *ids = e->ids + r * T, *types = e->types + r * T, *mask = e->mask + r * T;
    int64_t real = 0;
    for (int64_t t = 0; t < T; t++) { /* the baseline: the text's tokens made [PAD] but [CLS] and [SEP] */
      const int special = ids[t] == cls_id || ids[t] == sep_id || !mask[t];
      base[t] = special ? ids[t] : pad;
      if (!special) order[real++] = t;
    }
    int32_t target = -1;
    float logit, base_logit;
    if (real == 0) continue;
    if (damo_bert_explain(m, T, ids, base, types, mask, &target, (int)steps, attr, &logit, &base_logit) != DAMO_OK) {
      cli_fail("explain");
      goto done;
    }
    cli_deletion_orders(&d, attr, 1.0f, real, order);
    int32_t *ri = rows, *rt = rows + 2 * STEPS * T, *rm = rows + 4 * STEPS * T;
    for (int kind = 0; kind < 2; kind++) /* deleted: [PAD] and masked out */
      for (int s = 0; s < STEPS; s++) {
        const int64_t row = kind * STEPS + s;
        memcpy(ri + row * T, ids, (size_t)T * sizeof *ri);
        memcpy(rt + row * T, types, (size_t)T * sizeof *rt);
        memcpy(rm + row * T, mask, (size_t)T * sizeof *rm);
        for (int64_t k = 0; k < cli_deletion_count(s, real); k++) {
          const int64_t t = order[kind * real + k];
          ri[row * T + t] = pad, rm[row * T + t] = 0;
        }
      }
    if (damo_bert_classify(g, 2 * STEPS, ri, rt, rm, probs) != DAMO_OK) {
      cli_fail("explain");
      goto done;
    }
    for (int kind = 0; kind < 2; kind++)
      for (int s = 0; s < STEPS; s++) cli_deletion_add(&d, kind, s, probs[(int64_t)(kind * STEPS + s) * L + target], 0, 0);
    d.used++;
  }
  char what[64];
  snprintf(what, sizeof what, "integrated-gradients (%ld steps)", steps);
  if (!cli_deletion_report(&d, what, "the predicted class; deleted tokens become [PAD] and are masked out",
                           "% of the tokens deleted", "deletion: BERT tokens"))
    goto done;
  rc = 0;
done:
  damo_bert_graph_free(g);
  free(rows), free(base), free(order), free(attr), free(probs);
  for (int k = 0; k < 3; k++) cli_bert_free_split(&sp[k]);
  damo_text_dataset_free(data);
  return rc;
}

int cli_explain_bert(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *input = cli_opt(argc, argv, "--input");
  const char *png = cli_opt(argc, argv, "--out"), *html = cli_opt(argc, argv, "--html");
  if (!dir || (!input && !cli_opt(argc, argv, "--faithfulness"))) {
    fprintf(stderr, "damo explain: --model BERTDIR and --input MAIL (or --data SPEC --faithfulness N) are required\n");
    return 2;
  }
  damo_bert *m = NULL;
  damo_wordpiece *wp = NULL;
  damo_bert_graph *g = NULL;
  int T = 0, head = -1, rc = 1;
  size_t len = 0, clean_len = 0;
  char *raw = NULL, *clean = NULL, (*tokens)[32] = NULL;
  int32_t *in = NULL;
  float *maps = NULL, *roll = NULL, probs[64], *attr = NULL;
  int *skip = NULL;
  int32_t *base_ids = NULL;
  char (*words)[48] = NULL;
  if (cli_bert_open(dir, "explain", &m, &wp, &T, &head) != 1) goto done;
  if (cli_opt(argc, argv, "--faithfulness")) {
    long steps = 32;
    const char *sv = cli_opt(argc, argv, "--steps");
    rc = sv && !cli_parse_long(sv, "--steps", 1, 4096, &steps) ? 2 : bert_faithfulness(m, wp, T, head, argc, argv, steps);
    goto done;
  }
  const damo_bert_config *c = damo_bert_get_config(m);
  const int L = c->num_hidden_layers, H = c->num_attention_heads, labels = c->num_labels;
  in = malloc((size_t)(3 * T) * sizeof *in);
  maps = malloc((size_t)L * H * T * T * sizeof *maps);
  roll = malloc((size_t)T * T * sizeof *roll);
  tokens = calloc((size_t)T, sizeof *tokens);
  skip = calloc((size_t)T, sizeof *skip);
  if (!(raw = cli_read_file(input, &len))) {
    fprintf(stderr, "damo explain: cannot read %s\n", input);
    goto done;
  }
  if (!in || !maps || !roll || !tokens || !skip || labels > 64 || damo_email_clean(raw, len, &clean, &clean_len) != DAMO_OK ||
      cli_bert_encode_text(wp, clean, T, head, in, in + T, in + 2 * T) != DAMO_OK ||
      damo_bert_classifier_new(m, 1, T, 0, &g) != DAMO_OK || damo_bert_classify(g, 1, in, in + T, in + 2 * T, probs) != DAMO_OK ||
      damo_bert_attention_maps(m, T, in, in + T, in + 2 * T, maps) != DAMO_OK ||
      damo_attention_rollout(maps, L, H, T, in + 2 * T, roll) != DAMO_OK) {
    cli_fail("explain");
    goto done;
  }
  int64_t n = 0; /* the real tokens (mask 1), then padding */
  while (n < T && in[2 * T + n]) n++;
  for (int64_t i = 0; i < n; i++) {
    const char *t = damo_wordpiece_token(wp, in[i]);
    snprintf(tokens[i], sizeof tokens[i], "%s", t ? t : "?");
    skip[i] = !strcmp(tokens[i], "[CLS]") || !strcmp(tokens[i], "[SEP]");
  }
  int best = 0;
  for (int k = 1; k < labels; k++) best = probs[k] > probs[best] ? k : best;
  char fallback[32];
  printf("%s: %s %.3f; %d layers x %d heads over %lld tokens\n", input, cli_bert_label_name(m, best, fallback),
         (double)probs[best], L, H, (long long)n);
  print_top("attention rollout from [CLS] (what flows into the classifier)", roll, tokens, n, skip, 10);
  /* Integrated Gradients of the class's logit, from the text with its words made [PAD] */
  long steps = 64;
  const char *v = cli_opt(argc, argv, "--steps");
  if (v && !cli_parse_long(v, "--steps", 1, 4096, &steps)) {
    rc = 2;
    goto done;
  }
  base_ids = malloc((size_t)T * sizeof *base_ids);
  attr = calloc((size_t)T, sizeof *attr);
  words = calloc((size_t)T, sizeof *words);
  const int32_t pad = damo_wordpiece_token_id(wp, "[PAD]");
  int32_t target = best;
  float logit = 0, base_logit = 0;
  for (int64_t i = 0; base_ids && i < T; i++) base_ids[i] = i < n && !skip[i] && pad >= 0 ? pad : in[i];
  if (!base_ids || !attr || !words ||
      damo_bert_explain(m, T, in, base_ids, in + T, in + 2 * T, &target, (int)steps, attr, &logit, &base_logit) != DAMO_OK) {
    cli_fail("explain");
    goto done;
  }
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += attr[i];
  printf("  integrated gradients of the %s logit (%ld steps, from the words made [PAD]): sum %.4f, f(text) - "
         "f(baseline) %.4f, completeness gap %.2f%%\n", cli_bert_label_name(m, best, fallback), steps, sum,
         (double)(logit - base_logit), 100 * fabs(sum - (logit - base_logit)) / fmax(fabs((double)(logit - base_logit)), 1e-12));
  print_top("tokens for the class", attr, tokens, n, skip, 8);
  float vmax = 0;
  for (int64_t i = 0; i < n; i++) {
    snprintf(words[i], sizeof words[i], "%s", tokens[i]);
    vmax = fmaxf(vmax, fabsf(attr[i]));
  }
  const char *words_html = cli_opt(argc, argv, "--words"), *words_png = cli_opt(argc, argv, "--words-png");
  char title[256];
  snprintf(title, sizeof title, "%.80s: %s %.3f", strrchr(input, '/') ? strrchr(input, '/') + 1 : input,
           cli_bert_label_name(m, best, fallback), (double)probs[best]);
  if (png && !maps_png(png, title, maps, L, H, T, n)) goto done;
  if (html && !head_view_html(html, title, tokens, maps, L, H, T, n)) goto done;
  if (words_html && !cli_words_html(words_html, title, words, attr, (int)n, vmax)) goto done;
  if (words_png && !cli_words_png(words_png, title, words, attr, (int)n, vmax)) goto done;
  if (png) printf("attention maps (a row per layer, a column per head): %s\n", png);
  if (html) printf("head view: %s\n", html);
  if (words_html) printf("tokens shaded by their attributions: %s\n", words_html);
  if (words_png) printf("the same as a picture: %s\n", words_png);
  rc = 0;
done:
  free(base_ids), free(attr), free(words);
  damo_bert_graph_free(g);
  damo_wordpiece_free(wp);
  damo_bert_free(m);
  free(raw), free(clean), free(in), free(maps), free(roll), free(tokens), free(skip);
  return rc;
}

/* ------------------------------------------------------------------ GPT-2 */

int cli_explain_gpt2(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *prompt = cli_opt(argc, argv, "--prompt");
  const char *png = cli_opt(argc, argv, "--out"), *html = cli_opt(argc, argv, "--html");
  if (!dir || !prompt) {
    fprintf(stderr, "damo explain: --model GPT2DIR and --prompt TEXT are required\n");
    return 2;
  }
  long steps = 64;
  const char *v = cli_opt(argc, argv, "--steps");
  if (v && !cli_parse_long(v, "--steps", 1, 4096, &steps)) return 2;
  damo_bpe *bpe = NULL;
  damo_gpt2 *m = NULL;
  int32_t *ids = NULL, next = -1;
  int64_t T = 0;
  float *attr = NULL, *maps = NULL, logprob = 0, base_logprob = 0;
  char (*tokens)[32] = NULL, *text = NULL;
  int rc = 1;
  if (damo_bpe_load(cli_opt(argc, argv, "--vocab"), &bpe) != DAMO_OK || damo_gpt2_load(dir, &m) != DAMO_OK ||
      damo_bpe_encode(bpe, prompt, strlen(prompt), &ids, &T) != DAMO_OK) {
    cli_fail("explain");
    goto done;
  }
  if (T < 1) {
    fprintf(stderr, "damo explain: the prompt has no tokens\n");
    goto done;
  }
  if ((v = cli_opt(argc, argv, "--next"))) { /* the token explained: its text as GPT-2 writes it (" the") */
    int32_t *nid = NULL;
    int64_t nn = 0;
    if (damo_bpe_encode(bpe, v, strlen(v), &nid, &nn) != DAMO_OK || nn != 1) {
      fprintf(stderr, "damo explain: --next '%s' must be one GPT-2 token (often with its leading space)\n", v);
      free(nid);
      rc = 2;
      goto done;
    }
    next = nid[0];
    free(nid);
  }
  const damo_gpt2_config *c = damo_gpt2_get_config(m);
  attr = malloc((size_t)T * sizeof *attr);
  maps = malloc((size_t)c->n_layer * c->n_head * T * T * sizeof *maps);
  tokens = calloc((size_t)T, sizeof *tokens);
  if (!attr || !maps || !tokens || damo_gpt2_explain_next(m, ids, T, &next, (int)steps, attr, &logprob, &base_logprob) != DAMO_OK ||
      damo_gpt2_attention_maps(m, ids, T, maps) != DAMO_OK) {
    cli_fail("explain");
    goto done;
  }
  for (int64_t i = 0; i < T; i++) {
    char *t = NULL;
    size_t tl = 0;
    if (damo_bpe_decode(bpe, ids + i, 1, &t, &tl) == DAMO_OK) snprintf(tokens[i], sizeof tokens[i], "%.*s", (int)tl, t);
    free(t);
  }
  size_t tl = 0;
  if (damo_bpe_decode(bpe, &next, 1, &text, &tl) != DAMO_OK) goto done;
  double sum = 0;
  for (int64_t i = 0; i < T; i++) sum += attr[i];
  printf("next token '%s' (id %d): log-probability %.4f (p %.4f); integrated gradients over the %lld prompt tokens (%ld "
         "steps, from the positions alone): sum %.4f, logp - logp(positions) %.4f, completeness gap %.2f%%\n", text, next,
         (double)logprob, exp((double)logprob), (long long)T, steps, sum, (double)(logprob - base_logprob),
         100 * fabs(sum - (logprob - base_logprob)) / fmax(fabs((double)(logprob - base_logprob)), 1e-12));
  print_top("prompt tokens raising it most", attr, tokens, T, NULL, 8);
  float *neg = malloc((size_t)T * sizeof *neg);
  for (int64_t i = 0; neg && i < T; i++) neg[i] = -attr[i];
  if (neg) print_top("lowering it most (minus their attribution)", neg, tokens, T, NULL, 5);
  free(neg);
  char title[256];
  snprintf(title, sizeof title, "GPT-2 attention: \"%.60s\" -> '%s'", prompt, text);
  if (png && !maps_png(png, title, maps, c->n_layer, c->n_head, T, T)) goto done;
  if (html && !head_view_html(html, title, tokens, maps, c->n_layer, c->n_head, T, T)) goto done;
  if (png) printf("attention maps (a row per layer, a column per head): %s\n", png);
  if (html) printf("head view: %s\n", html);
  rc = 0;
done:
  free(ids), free(attr), free(maps), free(tokens), free(text);
  damo_gpt2_free(m);
  damo_bpe_free(bpe);
  return rc;
}
