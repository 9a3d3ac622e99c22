/* explain_text.c - `damo explain` for text models (a saved model with text.json: an embedding
 * reads the mail's word ids): one number per word the model reads (the mail cleaned as for
 * training, its first max_len words), printed as the words that pushed most for and against
 * the class, written as a self-contained HTML page (each word shaded by its sign and size,
 * the value in its tooltip) and as a PNG of the same, and as .npy (one value per position). */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The words of a cleaned text as the vocabulary cuts them, the first max_len of them. */
static int text_words(const char *text, size_t len, int max_len, char (*words)[48]) {
  size_t pos = 0, start = 0, wl = 0;
  int n = 0;
  while (n < max_len && damo_text_next_word(text, len, &pos, &start, &wl)) {
    snprintf(words[n], sizeof words[n], "%.*s", (int)(wl < 47 ? wl : 47), text + start);
    n++;
  }
  return n;
}

/* The share of the largest |value| as a background colour: red for the class, blue against. */
static void shade(float v, float vmax, int *r, int *g, int *b) {
  const float a = vmax > 0 ? fminf(fabsf(v) / vmax, 1.0f) : 0;
  *r = v >= 0 ? 255 : (int)(255 * (1 - 0.75f * a));
  *g = (int)(255 * (1 - 0.75f * a));
  *b = v >= 0 ? (int)(255 * (1 - 0.75f * a)) : 255;
}

static void html_escaped(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '<') fputs("&lt;", f);
    else if (*s == '>') fputs("&gt;", f);
    else if (*s == '&') fputs("&amp;", f);
    else if (*s == '"') fputs("&quot;", f);
    else fputc(*s, f);
  }
}

int cli_words_html(const char *path, const char *title, char (*words)[48], const float *attr, int n, float vmax) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "damo explain: cannot write %s\n", path);
    return 0;
  }
  fprintf(f, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>damo explain</title>\n<style>body{font:15px/2 "
             "system-ui,sans-serif;max-width:900px;margin:24px auto;color:#1d2330}span{padding:2px 3px;border-radius:3px}"
             "h1{font-size:17px}.key span{margin-right:8px}</style></head><body>\n<h1>");
  html_escaped(f, title);
  fprintf(f, "</h1>\n<p class=\"key\"><span style=\"background:#ff4040\">for the class</span><span style=\"background:"
             "#4040ff;color:#fff\">against it</span> (shade: the share of the largest |value|, %.4g; hover for each)</p>\n<p>",
          (double)vmax);
  for (int t = 0; t < n; t++) {
    int r, g, b;
    shade(attr[t], vmax, &r, &g, &b);
    fprintf(f, "<span title=\"%+.5f\" style=\"background:rgb(%d,%d,%d)\">", (double)attr[t], r, g, b);
    html_escaped(f, words[t]);
    fprintf(f, "</span> ");
  }
  fprintf(f, "</p>\n</body></html>\n");
  return fclose(f) == 0 || (fprintf(stderr, "damo explain: cannot write %s\n", path), 0);
}

/* The words as shaded boxes in lines of at most 100 characters, 2x the plots' font. */
int cli_words_png(const char *path, const char *title, char (*words)[48], const float *attr, int n, float vmax) {
  enum { WIDTH = 1240, LINE = 30, CHAR = 12, MARGIN = 16 };
  int lines = 1, x = MARGIN;
  for (int t = 0; t < n; t++) {
    const int w = (int)strlen(words[t]) * CHAR + 10;
    if (x + w > WIDTH - MARGIN) lines++, x = MARGIN;
    x += w;
  }
  const int64_t shape[3] = {MARGIN * 2 + LINE * (lines + 1), WIDTH, 3};
  damo_tensor *img = damo_tensor_new(DAMO_F32, 3, shape);
  if (!img) return !cli_fail("explain");
  float *p = damo_tensor_f32(img);
  for (int64_t i = 0; i < damo_tensor_numel(img); i++) p[i] = 255;
  const float ink[3] = {30, 30, 40};
  damo_image_draw_text(img, MARGIN, MARGIN, title, 2, ink);
  x = MARGIN;
  int y = MARGIN + LINE;
  for (int t = 0; t < n; t++) {
    const int w = (int)strlen(words[t]) * CHAR + 10;
    if (x + w > WIDTH - MARGIN) y += LINE, x = MARGIN;
    int r, g, b;
    shade(attr[t], vmax, &r, &g, &b);
    for (int yy = y; yy < y + LINE - 6; yy++)
      for (int xx = x; xx < x + w - 4; xx++) {
        float *q = p + ((int64_t)yy * WIDTH + xx) * 3;
        q[0] = (float)r, q[1] = (float)g, q[2] = (float)b;
      }
    damo_image_draw_text(img, x + 3, y + 3, words[t], 2, ink);
    x += w;
  }
  const damo_status st = damo_image_save_png(path, img);
  damo_tensor_free(img);
  return st == DAMO_OK || !cli_fail("explain");
}

int cli_explain_text(damo_model *m, damo_explainer *e, const damo_vocab *vocab, int max_len, int numbers, int argc,
                     char **argv, const damo_attribution_options *o, int32_t target) {
  const char *input = cli_opt(argc, argv, "--input"), *out = cli_opt(argc, argv, "--out");
  const char *html = cli_opt(argc, argv, "--html"), *npy = cli_opt(argc, argv, "--attributions");
  size_t len = 0, clean_len = 0;
  char *raw = cli_read_file(input, &len), *clean = NULL;
  int32_t *ids = calloc((size_t)max_len, sizeof *ids);
  float *attr = calloc((size_t)max_len, sizeof *attr);
  char(*words)[48] = calloc((size_t)max_len, sizeof *words);
  int rc = 1;
  damo_text_clean_options co = {numbers};
  if (!raw) {
    fprintf(stderr, "damo explain: cannot read %s\n", input);
    goto done;
  }
  damo_attribution_report rep;
  if (!ids || !attr || !words || damo_email_clean_ex(raw, len, &co, &clean, &clean_len) != DAMO_OK ||
      damo_vocab_encode(vocab, clean, clean_len, max_len, ids, NULL) != DAMO_OK ||
      damo_attribute_tokens(e, ids, target, o, attr, &rep) != DAMO_OK) {
    cli_fail("explain");
    goto done;
  }
  const int n = text_words(clean, clean_len, max_len, words);
  const char *const *names;
  const int n_names = damo_model_class_names(m, &names);
  char label[32], title[256];
  snprintf(label, sizeof label, "%d", rep.target);
  /* one sigmoid output: its logit is the second class's (p(spam) for spam models) */
  const int single = damo_explainer_classes(e) == 1;
  const char *cls = single ? (n_names >= 2 ? names[1] : "the positive class") : rep.target < n_names ? names[rep.target] : label;
  if (single)
    printf("%s: the logit of %s, %.4f (predicted %s, p %.3f); %s over the %d words the model reads", input, cls,
           (double)rep.logit, n_names >= 2 ? names[rep.logit > 0] : rep.logit > 0 ? "positive" : "negative",
           1.0 / (1.0 + exp(-(double)rep.logit)), damo_attribution_method_name(o->method), n);
  else
    printf("%s: %s %s (logit %.4f); %s over the %d words the model reads", input, target < 0 ? "predicted" : "class", cls,
           (double)rep.logit, damo_attribution_method_name(o->method), n);
  if (o->method == DAMO_ATTR_INTEGRATED_GRADIENTS)
    printf(" (%d points, zero embedding): sum %.4f, f(text) - f(zeros) %.4f, completeness gap %.2f%%", o->steps, rep.sum,
           (double)(rep.logit - rep.baseline_logit), 100 * rep.completeness_gap);
  printf("\n");
  float vmax = 0;
  for (int t = 0; t < n; t++) vmax = fmaxf(vmax, fabsf(attr[t]));
  for (int side = 0; side < 2; side++) { /* the strongest words for, then against */
    int shown = 0, *used = calloc((size_t)n + 1, sizeof *used);
    printf("  %s:", side ? "against" : "for the class");
    for (int k = 0; used && k < 8; k++) {
      int best = -1;
      for (int t = 0; t < n; t++)
        if (!used[t] && (side ? attr[t] < 0 : attr[t] > 0) && (best < 0 || fabsf(attr[t]) > fabsf(attr[best]))) best = t;
      if (best < 0) break;
      used[best] = 1;
      printf(" %s (%+.3f)", words[best], (double)attr[best]);
      shown++;
    }
    printf("%s\n", shown ? "" : " none");
    free(used);
  }
  const char *base_name = strrchr(input, '/') ? strrchr(input, '/') + 1 : input;
  if (cli_flag(argc, argv, "--sanity")) { /* the same words through the model with its weights drawn afresh */
    char config[4096];
    const char *dir = cli_opt(argc, argv, "--model");
    snprintf(config, sizeof config, "%s/config.json", dir);
    damo_model *rm = NULL;
    damo_explainer *re = NULL;
    float *rattr = calloc((size_t)max_len, sizeof *rattr);
    damo_attribution_report rrep;
    if (!rattr || damo_model_from_config_file(config, &rm) != DAMO_OK || damo_model_build(rm, 12345) != DAMO_OK ||
        damo_explainer_new(rm, 64, &re) != DAMO_OK || damo_attribute_tokens(re, ids, rep.target, o, rattr, &rrep) != DAMO_OK)
      cli_fail("explain --sanity");
    else
      printf("sanity (weights drawn afresh): rank correlation of |attributions| over the %d words %.3f (near 1: the map "
             "does not depend on what the model learnt)\n", n, cli_rank_correlation(attr, rattr, n));
    free(rattr);
    damo_explainer_free(re);
    damo_model_free(rm);
  }
  snprintf(title, sizeof title, "%.60s: %s %s, %s", base_name, single ? "toward" : target < 0 ? "predicted" : "class", cls,
           damo_attribution_method_name(o->method));
  if (html && !cli_words_html(html, title, words, attr, n, vmax)) goto done;
  if (out && !cli_words_png(out, title, words, attr, n, vmax)) goto done;
  if (npy) {
    const int64_t shape[1] = {max_len};
    damo_tensor *t = damo_tensor_new(DAMO_F32, 1, shape);
    if (!t) goto done;
    memcpy(damo_tensor_f32(t), attr, (size_t)max_len * sizeof *attr);
    const damo_status st = damo_npy_save(npy, t);
    damo_tensor_free(t);
    if (st != DAMO_OK) {
      cli_fail("explain");
      goto done;
    }
  }
  if (html) printf("page: %s\n", html);
  if (out) printf("picture: %s\n", out);
  if (npy) printf("attributions (one per position, %d): %s\n", max_len, npy);
  rc = 0;
done:
  free(raw), free(clean), free(ids), free(attr), free(words);
  return rc;
}

/* The predicted class's probability from a row of logits (one output: sigmoid). */
static float predicted_probability(const float *logits, int64_t C, int32_t cls) {
  if (C == 1) {
    const float p = 1.0f / (1.0f + expf(-logits[0]));
    return cls ? p : 1 - p;
  }
  double mx = logits[0], sum = 0;
  for (int64_t c = 1; c < C; c++) mx = logits[c] > mx ? logits[c] : mx;
  for (int64_t c = 0; c < C; c++) sum += exp((double)logits[c] - mx);
  return (float)(exp((double)logits[cls] - mx) / sum);
}

int cli_explain_text_faithfulness(damo_model *m, damo_explainer *e, const char *dir, int argc, char **argv,
                                  const damo_attribution_options *o) {
  enum { STEPS = CLI_DELETION_STEPS };
  cli_deletion d;
  if (!cli_deletion_begin(&d, argc, argv)) return 2;
  damo_text_dataset *data = NULL;
  damo_tensor *x = NULL, *y = NULL;
  if (cli_text_split_for_model(dir, m, d.spec, DAMO_SPLIT_TEST, &data, &x, &y) != DAMO_OK) return cli_fail("explain");
  const int64_t T = damo_explainer_tokens(e), C = damo_explainer_classes(e), total = x->shape[0];
  const long n = d.n < total ? d.n : (long)total;
  int32_t *rows = malloc((size_t)(2 * STEPS * T) * sizeof *rows);
  int64_t *order = malloc((size_t)(2 * T) * sizeof *order);
  float *attr = malloc((size_t)T * sizeof *attr), *logits = malloc((size_t)(2 * STEPS * C) * sizeof *logits);
  float *alpha = malloc((size_t)(2 * STEPS) * sizeof *alpha);
  double gap_sum = 0, *gaps = malloc((size_t)n * sizeof *gaps);
  int rc = 1;
  for (int k = 0; alpha && k < 2 * STEPS; k++) alpha[k] = 1;
  for (long i = 0; rows && order && attr && logits && alpha && gaps && i < n; i++) {
    const int32_t *ids = damo_tensor_i32(x) + i * (total / n) * T;
    damo_attribution_report rep;
    if (damo_attribute_tokens(e, ids, -1, o, attr, &rep) != DAMO_OK) {
      cli_fail("explain");
      goto done;
    }
    /* the class predicted; a single output's attributions are toward class 1 */
    const int32_t cls = C == 1 ? rep.logit > 0 : rep.target;
    int64_t real = 0;
    for (int64_t t = 0; t < T; t++)
      if (ids[t]) order[real++] = t;
    if (real == 0) continue;
    cli_deletion_orders(&d, attr, C == 1 && !cls ? -1.0f : 1.0f, real, order);
    for (int kind = 0; kind < 2; kind++) /* deleted: <pad>, masked out */
      for (int s = 0; s < STEPS; s++) {
        int32_t *r = rows + (int64_t)(kind * STEPS + s) * T;
        memcpy(r, ids, (size_t)T * sizeof *r);
        for (int64_t k = 0; k < cli_deletion_count(s, real); k++) r[order[kind * real + k]] = 0;
      }
    if (damo_explainer_run_tokens(e, rows, 2 * STEPS, alpha, NULL, logits, NULL, NULL) != DAMO_OK) {
      cli_fail("explain");
      goto done;
    }
    for (int kind = 0; kind < 2; kind++)
      for (int s = 0; s < STEPS; s++)
        cli_deletion_add(&d, kind, s, predicted_probability(logits + (int64_t)(kind * STEPS + s) * C, C, cls), 0, 0);
    gap_sum += rep.completeness_gap;
    gaps[d.used++] = rep.completeness_gap;
  }
  char title[64];
  snprintf(title, sizeof title, "deletion: %s", damo_attribution_method_name(o->method));
  if (!cli_deletion_report(&d, damo_attribution_method_name(o->method), "the predicted class; deleted words become <pad>",
                           "% of the words deleted", title))
    goto done;
  if (o->method == DAMO_ATTR_INTEGRATED_GRADIENTS) { /* a text whose f(x) - f(zeros) is near 0 has a large relative gap */
    for (long a = 1; a < d.used; a++)
      for (long b = a; b > 0 && gaps[b - 1] > gaps[b]; b--) {
        const double t = gaps[b];
        gaps[b] = gaps[b - 1], gaps[b - 1] = t;
      }
    printf("completeness gap median %.3f%%, mean %.3f%%, 90th percentile %.3f%% (%d points)\n", 100 * gaps[d.used / 2],
           100 * gap_sum / (double)d.used, 100 * gaps[(d.used * 9) / 10], o->steps);
  }
  rc = 0;
done:
  free(rows), free(order), free(attr), free(logits), free(alpha), free(gaps);
  damo_tensor_free(x), damo_tensor_free(y);
  damo_text_dataset_free(data);
  return rc;
}
