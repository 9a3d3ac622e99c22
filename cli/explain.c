/* explain.c - `damo explain`: which parts of an input made a classifier decide, as numbers
 * (.npy, the input's shape), a printed summary (the class, the completeness check of
 * Integrated Gradients) and a picture: the input, the heat map, the two blended, and a colour
 * bar, side by side (a folder of pictures: one such row per picture in one PNG). Pictures are
 * converted as damo predict converts them; an x.npy input is explained row by row (--index).
 * --sanity repeats the method on the model with its weights drawn afresh and prints the rank
 * correlation of the two maps (Adebayo et al.: a map that does not change is not about the
 * model). */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct explain_input {
  char name[512];
  float *x;  /* one example, the model's input shape */
  int truth; /* its true class when known (a folder of class folders), else -1 */
} explain_input;

/* FOLDER/<class name>/<picture>: the pictures of every folder named as one of the model's
 * classes, in class order, with that class as their truth; 0 when FOLDER has no such folder. */
static int class_folders(const damo_model *m, const char *path, char ***paths, int **truth, int *n) {
  const char *const *names;
  const int n_names = damo_model_class_names(m, &names);
  *paths = NULL, *truth = NULL, *n = 0;
  int cap = 0;
  for (int c = 0; c < n_names; c++) {
    char sub[4096];
    struct stat sb;
    snprintf(sub, sizeof sub, "%s/%s", path, names[c]);
    if (stat(sub, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
    char **found = NULL;
    int k = 0;
    if (!cli_list_images(sub, &found, &k)) continue;
    if (*n + k > cap) {
      cap = 2 * (*n + k);
      char **gp = realloc(*paths, (size_t)cap * sizeof *gp);
      int *gt = realloc(*truth, (size_t)cap * sizeof *gt);
      if (gp) *paths = gp;
      if (gt) *truth = gt;
      if (!gp || !gt) {
        for (int i = 0; i < k; i++) free(found[i]);
        free(found);
        break;
      }
    }
    for (int i = 0; i < k; i++) (*paths)[*n] = found[i], (*truth)[(*n)++] = c;
    free(found);
  }
  return *n > 0;
}

/* The examples to explain: pictures (a file or a folder), or rows of an x.npy. */
static int load_inputs(const damo_model *m, const char *path, long index, long rows_wanted, int invert,
                       explain_input **out, int *count) {
  int64_t shape[DAMO_MAX_DIMS];
  const int nd = damo_model_input_shape(m, shape);
  int64_t D = 1;
  for (int i = 0; i < nd; i++) D *= shape[i];
  *out = NULL, *count = 0;
  const size_t len = strlen(path);
  if (len > 4 && !strcmp(path + len - 4, ".npy")) {
    damo_tensor *t = NULL;
    if (damo_npy_load(path, &t) != DAMO_OK) return !cli_fail("explain");
    const int64_t rows = damo_tensor_numel(t) / D;
    if (damo_tensor_numel(t) % D || index < 0 || index + rows_wanted > rows || t->dtype == DAMO_I32) {
      fprintf(stderr, "damo explain: %s holds %lld values of %s; the model takes examples of %lld values (rows --index "
              "%ld to %ld of %lld)\n", path, (long long)damo_tensor_numel(t), damo_dtype_name(t->dtype), (long long)D,
              index, index + rows_wanted - 1, (long long)rows);
      damo_tensor_free(t);
      return 0;
    }
    *out = calloc((size_t)rows_wanted, sizeof **out);
    for (long r = 0; *out && r < rows_wanted; r++) {
      if (!((*out)[r].x = malloc((size_t)D * sizeof(float)))) break;
      for (int64_t i = 0; i < D; i++)
        (*out)[r].x[i] = t->dtype == DAMO_U8 ? (float)((const uint8_t *)t->data)[(index + r) * D + i]
                                             : damo_tensor_f32(t)[(index + r) * D + i];
      snprintf((*out)[r].name, sizeof (*out)[r].name, "%s[%ld]", path, index + r);
      (*out)[r].truth = -1;
      *count = (int)r + 1;
    }
    damo_tensor_free(t);
    return *count == rows_wanted;
  }
  if (!(nd == 2 || (nd == 3 && (shape[2] == 1 || shape[2] == 3)))) {
    fprintf(stderr, "damo explain: the model takes inputs of rank %d, not pictures; give an x.npy\n", nd);
    return 0;
  }
  int n = 0, *truth = NULL;
  char **paths = NULL;
  if (!class_folders(m, path, &paths, &truth, &n) && !cli_list_images(path, &paths, &n)) return 0;
  explain_input *in = calloc((size_t)n, sizeof *in);
  int ok = in != NULL;
  for (int i = 0; ok && i < n; i++) {
    in[i].truth = truth ? truth[i] : -1;
    damo_tensor *img = NULL, *conv = NULL;
    ok = damo_image_load(paths[i], 0, &img) == DAMO_OK &&
         damo_image_to_model_input(img, (int)shape[0], (int)shape[1], nd == 3 ? (int)shape[2] : 1, invert, &conv) == DAMO_OK &&
         (in[i].x = malloc((size_t)D * sizeof(float))) != NULL;
    if (ok) memcpy(in[i].x, damo_tensor_f32(conv), (size_t)D * sizeof(float));
    else cli_fail("explain");
    snprintf(in[i].name, sizeof in[i].name, "%s", paths[i]);
    damo_tensor_free(img);
    damo_tensor_free(conv);
  }
  for (int i = 0; i < n; i++) free(paths[i]);
  free(paths);
  free(truth);
  *out = in, *count = ok ? n : 0;
  return ok;
}

/* A baseline: black (zeros), the input blurred (a Gaussian of sigma 4 pixels per axis, each
 * channel), or a picture / .npy row converted like the input. */
static int make_baseline(const damo_model *m, const char *spec, const float *x, float *base) {
  int64_t shape[DAMO_MAX_DIMS];
  const int nd = damo_model_input_shape(m, shape);
  int64_t D = 1;
  for (int i = 0; i < nd; i++) D *= shape[i];
  if (!spec || !strcmp(spec, "black")) {
    memset(base, 0, (size_t)D * sizeof *base);
    return 1;
  }
  if (!strcmp(spec, "blur")) {
    const int64_t H = nd >= 2 ? shape[0] : 1, W = nd >= 2 ? shape[1] : D, C = D / (H * W);
    const int radius = 8;
    const double sigma = 4;
    float k[17], *tmp = malloc((size_t)D * sizeof *tmp);
    if (!tmp) return 0;
    for (int i = -radius; i <= radius; i++) k[i + radius] = (float)exp(-0.5 * i * i / (sigma * sigma));
    for (int pass = 0; pass < 2; pass++) { /* rows, then columns; weights renormalised at the edges */
      const float *src = pass ? tmp : x;
      float *dst = pass ? base : tmp;
      for (int64_t yy = 0; yy < H; yy++)
        for (int64_t xx = 0; xx < W; xx++)
          for (int64_t c = 0; c < C; c++) {
            double sum = 0, wsum = 0;
            for (int i = -radius; i <= radius; i++) {
              const int64_t py = pass ? yy + i : yy, px = pass ? xx : xx + i;
              if (py < 0 || py >= H || px < 0 || px >= W) continue;
              sum += k[i + radius] * src[(py * W + px) * C + c];
              wsum += k[i + radius];
            }
            dst[(yy * W + xx) * C + c] = (float)(sum / wsum);
          }
    }
    free(tmp);
    return 1;
  }
  explain_input *in = NULL;
  int n = 0;
  if (!load_inputs(m, spec, 0, 1, 1, &in, &n) || n != 1) {
    fprintf(stderr, "damo explain: --baseline is black, blur, or one picture or x.npy (its first row)\n");
    for (int i = 0; in && i < n; i++) free(in[i].x);
    free(in);
    return 0;
  }
  memcpy(base, in[0].x, (size_t)D * sizeof *base);
  free(in[0].x);
  free(in);
  return 1;
}

/* ------------------------------------------------------------------ the picture */

/* A colour for v in [-1, 1] (signed: blue - white - red) or [0, 1] (black - red - yellow - white). */
static void colour(float v, int signed_map, float rgb[3]) {
  if (signed_map) {
    const float a = fminf(fabsf(v), 1.0f);
    rgb[0] = v >= 0 ? 255 : 255 * (1 - a);
    rgb[1] = 255 * (1 - a);
    rgb[2] = v >= 0 ? 255 * (1 - a) : 255;
    return;
  }
  const float t = fminf(fmaxf(v, 0.0f), 1.0f) * 3;
  rgb[0] = 255 * fminf(t, 1.0f), rgb[1] = 255 * fminf(fmaxf(t - 1, 0.0f), 1.0f), rgb[2] = 255 * fmaxf(t - 2, 0.0f);
}

/* One row of the panel into img (rows of 3 tiles + a colour bar; tile side S = scale * W). */
enum { CAPTION = 16 }; /* pixels under each row for its caption */

static void draw_row(damo_tensor *img, int64_t row, const float *x, const float *a, int64_t H, int64_t W, int64_t C,
                     int scale, int signed_map, const char *caption) {
  const int64_t S = W * scale, TH = H * scale + CAPTION, gap = 8, IW = img->shape[1];
  const float ink[3] = {30, 30, 40};
  damo_image_draw_text(img, (int)gap, (int)(row * (TH + gap) + gap + H * scale + 4), caption, 1, ink);
  float amax = 0, xmax = 1;
  for (int64_t i = 0; i < H * W * C; i++) amax = fmaxf(amax, fabsf(a[i])), xmax = fmaxf(xmax, x[i]);
  float *px = damo_tensor_f32(img);
  for (int64_t yy = 0; yy < H * scale; yy++)
    for (int64_t xx = 0; xx < S; xx++) {
      const int64_t sy = yy / scale, sx = xx / scale;
      float grey = 0, v = 0;
      for (int64_t c = 0; c < C; c++) grey += x[(sy * W + sx) * C + c], v += a[(sy * W + sx) * C + c];
      grey = 255 * grey / (float)C / xmax; /* the input as it was given (0..255 or 0..1) */
      v = amax > 0 ? v / (float)C / amax : 0;
      float heat[3];
      colour(signed_map ? v : fabsf(v), signed_map, heat);
      const int64_t y = row * (TH + gap) + gap + yy;
      for (int k = 0; k < 3; k++) {
        px[(y * IW + gap + xx) * 3 + k] = grey;
        px[(y * IW + 2 * gap + S + xx) * 3 + k] = heat[k];
        px[(y * IW + 3 * gap + 2 * S + xx) * 3 + k] = 0.5f * grey + 0.5f * heat[k];
      }
    }
  for (int64_t yy = 0; yy < H * scale; yy++) { /* the colour bar: +max at the top, -max (or 0) at the bottom */
    float rgb[3];
    const float v = 1.0f - 2.0f * (float)yy / (float)(H * scale - 1);
    colour(signed_map ? v : 0.5f * (v + 1), signed_map, rgb);
    const int64_t y = row * (TH + gap) + gap + yy;
    for (int64_t xx = 0; xx < 16; xx++)
      for (int k = 0; k < 3; k++) px[(y * IW + 4 * gap + 3 * S + xx) * 3 + k] = rgb[k];
  }
}

/* ------------------------------------------------------------------ the command */

double cli_rank_correlation(const float *a, const float *b, int64_t n) {
  double *ra = malloc((size_t)n * sizeof *ra), *rb = malloc((size_t)n * sizeof *rb);
  if (!ra || !rb) return NAN;
  for (int k = 0; k < 2; k++) { /* ranks by counting (n is a picture's size) */
    const float *v = k ? b : a;
    double *r = k ? rb : ra;
    for (int64_t i = 0; i < n; i++) {
      double below = 0, equal = 0;
      for (int64_t j = 0; j < n; j++) below += fabsf(v[j]) < fabsf(v[i]), equal += fabsf(v[j]) == fabsf(v[i]);
      r[i] = below + 0.5 * (equal - 1);
    }
  }
  double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
  for (int64_t i = 0; i < n; i++) ma += ra[i], mb += rb[i];
  ma /= (double)n, mb /= (double)n;
  for (int64_t i = 0; i < n; i++)
    sab += (ra[i] - ma) * (rb[i] - mb), saa += (ra[i] - ma) * (ra[i] - ma), sbb += (rb[i] - mb) * (rb[i] - mb);
  free(ra), free(rb);
  return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0;
}

static int parse_options(int argc, char **argv, damo_attribution_options *o, long *index, int *invert) {
  const char *v;
  long n;
  double d;
  *o = damo_attribution_defaults();
  *index = 0, *invert = 1;
  if ((v = cli_opt(argc, argv, "--method")) && damo_attribution_method_parse(v, &o->method) != DAMO_OK)
    return !cli_fail("explain");
  if ((v = cli_opt(argc, argv, "--steps"))) {
    if (!cli_parse_long(v, "--steps", 1, 4096, &n)) return 0;
    o->steps = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--integration"))) {
    if (strcmp(v, "riemann") && strcmp(v, "gauss-legendre")) {
      fprintf(stderr, "damo explain: --integration is riemann or gauss-legendre, not '%s'\n", v);
      return 0;
    }
    o->gauss_legendre = !strcmp(v, "gauss-legendre");
  }
  if ((v = cli_opt(argc, argv, "--samples"))) {
    if (!cli_parse_long(v, "--samples", 1, 4096, &n)) return 0;
    o->samples = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--noise"))) {
    if (!cli_parse_double(v, "--noise", 0, 0, 10, &d)) return 0;
    o->noise = (float)d;
  }
  if ((v = cli_opt(argc, argv, "--window"))) {
    if (!cli_parse_long(v, "--window", 1, 4096, &n)) return 0;
    o->window = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--stride"))) {
    if (!cli_parse_long(v, "--stride", 1, 4096, &n)) return 0;
    o->stride = (int)n;
  }
  if ((v = cli_opt(argc, argv, "--seed"))) {
    if (!cli_parse_long(v, "--seed", 0, 0x7fffffffL, &n)) return 0;
    o->seed = (uint64_t)n;
  }
  if ((v = cli_opt(argc, argv, "--index")) && !cli_parse_long(v, "--index", 0, 1L << 40, index)) return 0;
  /* an option of another method would be silently unused: refused instead */
  static const struct {
    const char *option;
    unsigned methods; /* bits of damo_attribution_method */
  } owner[] = {{"--steps", 1u << DAMO_ATTR_INTEGRATED_GRADIENTS},
               {"--integration", 1u << DAMO_ATTR_INTEGRATED_GRADIENTS},
               {"--baseline", 1u << DAMO_ATTR_INTEGRATED_GRADIENTS | 1u << DAMO_ATTR_OCCLUSION},
               {"--samples", 1u << DAMO_ATTR_SMOOTHGRAD},
               {"--noise", 1u << DAMO_ATTR_SMOOTHGRAD},
               {"--seed", 1u << DAMO_ATTR_SMOOTHGRAD},
               {"--layer", 1u << DAMO_ATTR_GRAD_CAM},
               {"--window", 1u << DAMO_ATTR_OCCLUSION},
               {"--stride", 1u << DAMO_ATTR_OCCLUSION}};
  for (size_t i = 0; i < sizeof owner / sizeof owner[0]; i++)
    if (cli_opt(argc, argv, owner[i].option) && !(owner[i].methods & (1u << o->method))) {
      fprintf(stderr, "damo explain: %s is not an option of --method %s\n", owner[i].option,
              damo_attribution_method_name(o->method));
      return 0;
    }
  if ((v = cli_opt(argc, argv, "--invert"))) {
    if (strcmp(v, "auto") && strcmp(v, "no")) {
      fprintf(stderr, "damo explain: --invert is auto or no, not '%s'\n", v);
      return 0;
    }
    *invert = !strcmp(v, "auto");
  }
  return 1;
}

/* --target: auto (-1), a class index, or a class name. */
static int parse_target(const damo_model *m, const char *v, int64_t classes, int32_t *target) {
  *target = -1;
  if (!v || !strcmp(v, "auto")) return 1;
  const char *const *names;
  const int n = damo_model_class_names(m, &names);
  for (int i = 0; i < n; i++)
    if (!strcmp(names[i], v)) return (*target = i), 1;
  long k;
  if (!cli_parse_long(v, "--target (auto, a class index or name)", 0, classes - 1, &k)) return 0;
  *target = (int32_t)k;
  return 1;
}

/* The predicted class of logits (C of them) and its probability (softmax; one output: sigmoid). */
static int32_t class_probability(const float *logits, int64_t C, float *p) {
  if (C == 1) {
    const float s = 1.0f / (1.0f + expf(-logits[0]));
    *p = s > 0.5f ? s : 1 - s;
    return s > 0.5f;
  }
  int32_t best = 0;
  for (int64_t c = 1; c < C; c++) best = logits[c] > logits[best] ? (int32_t)c : best;
  double sum = 0;
  for (int64_t c = 0; c < C; c++) sum += exp((double)logits[c] - logits[best]);
  *p = (float)(1.0 / sum);
  return best;
}

/* The target's probability under softmax (one output: sigmoid, as class 1). */
static float target_probability(const float *logits, int64_t C, int32_t t) {
  if (C == 1) return t ? 1.0f / (1.0f + expf(-logits[0])) : 1.0f / (1.0f + expf(logits[0]));
  double mx = logits[0], sum = 0;
  for (int64_t c = 1; c < C; c++) mx = logits[c] > mx ? logits[c] : mx;
  for (int64_t c = 0; c < C; c++) sum += exp((double)logits[c] - mx);
  return (float)(exp((double)logits[t] - mx) / sum);
}

/* --data SPEC --faithfulness N: the deletion test. For N test examples, the elements are set
 * to the baseline in the order of their attributions (largest first) or in a random order, 0
 * to 50% of them in steps of 5%, and the predicted class's mean probability is tracked: a
 * faithful method makes it fall faster than chance. Also the mean time per attribution and,
 * for integrated gradients, the completeness gaps. --curve FILE.png plots both curves. */
static int faithfulness(damo_model *m, damo_explainer *e, int argc, char **argv, damo_attribution_options *o) {
  enum { STEPS = CLI_DELETION_STEPS };
  cli_deletion d;
  if (!cli_deletion_begin(&d, argc, argv)) return 2;
  damo_tensor *x = NULL, *y = NULL;
  if (cli_load_data(d.spec, "test", NULL, &x, &y) != DAMO_OK) return cli_fail("explain");
  const int64_t D = damo_explainer_input_size(e), C = damo_explainer_classes(e), total = x->shape[0];
  if (damo_tensor_numel(x) != total * D || x->dtype == DAMO_I32) {
    fprintf(stderr, "damo explain: %s's examples are not the model's input (%lld values)\n", d.spec, (long long)D);
    damo_tensor_free(x), damo_tensor_free(y);
    return 1;
  }
  const long n = d.n < total ? d.n : (long)total;
  float *xi = malloc((size_t)D * sizeof *xi), *base = malloc((size_t)D * sizeof *base), *a = malloc((size_t)D * sizeof *a);
  float *rows = malloc((size_t)(2 * STEPS * D) * sizeof *rows), *logits = malloc((size_t)(2 * STEPS * C) * sizeof *logits);
  int64_t *order = malloc((size_t)(2 * D) * sizeof *order);
  double gap_sum = 0, gap_max = 0, seconds = 0;
  int rc = 1;
  for (long i = 0; xi && base && a && rows && logits && order && i < n; i++) {
    const int64_t row = i * (total / n); /* spread over the split */
    for (int64_t k = 0; k < D; k++)
      xi[k] = x->dtype == DAMO_U8 ? (float)((const uint8_t *)x->data)[row * D + k] : damo_tensor_f32(x)[row * D + k];
    damo_attribution_report rep;
    o->baseline = base;
    if (!make_baseline(m, cli_opt(argc, argv, "--baseline"), xi, base)) goto done;
    const double t0 = cli_seconds();
    if (damo_attribute(e, xi, -1, o, a, &rep) != DAMO_OK) {
      cli_fail("explain");
      goto done;
    }
    seconds += cli_seconds() - t0;
    gap_sum += rep.completeness_gap, gap_max = rep.completeness_gap > gap_max ? rep.completeness_gap : gap_max;
    for (int64_t k = 0; k < D; k++) order[k] = k;
    cli_deletion_orders(&d, a, 1.0f, D, order);
    for (int kind = 0; kind < 2; kind++) /* deleted: set to the baseline */
      for (int s = 0; s < STEPS; s++) {
        float *r = rows + (int64_t)(kind * STEPS + s) * D;
        memcpy(r, xi, (size_t)D * sizeof *r);
        for (int64_t k = 0; k < cli_deletion_count(s, D); k++) r[order[kind * D + k]] = base[order[kind * D + k]];
      }
    if (damo_explainer_run(e, rows, 2 * STEPS, NULL, logits, NULL) != DAMO_OK) {
      cli_fail("explain");
      goto done;
    }
    for (int kind = 0; kind < 2; kind++)
      for (int s = 0; s < STEPS; s++) {
        const float *l = logits + (int64_t)(kind * STEPS + s) * C;
        cli_deletion_add(&d, kind, s, target_probability(l, C, rep.target), l[rep.target], 1);
      }
    d.used++;
  }
  char title[128];
  snprintf(title, sizeof title, "deletion test: %s", damo_attribution_method_name(o->method));
  if (!cli_deletion_report(&d, damo_attribution_method_name(o->method), "the predicted class; deleted = set to the baseline",
                           "% of the input deleted", title))
    goto done;
  printf("mean %.1f ms per attribution", 1e3 * seconds / (double)d.used);
  if (o->method == DAMO_ATTR_INTEGRATED_GRADIENTS)
    printf("; completeness gap mean %.3f%%, largest %.3f%% (%d %s points)", 100 * gap_sum / (double)d.used,
           100 * gap_max, o->steps, o->gauss_legendre ? "Gauss-Legendre" : "midpoint");
  printf("\n");
  rc = 0;
done:
  free(xi), free(base), free(a), free(rows), free(logits), free(order);
  damo_tensor_free(x), damo_tensor_free(y);
  return rc;
}

int cli_explain(int argc, char **argv) {
  const char *dir = cli_opt(argc, argv, "--model"), *input = cli_opt(argc, argv, "--input");
  const char *png = cli_opt(argc, argv, "--out"), *npy = cli_opt(argc, argv, "--attributions");
  if (!dir || (!input && !cli_opt(argc, argv, "--faithfulness"))) {
    fprintf(stderr, "damo explain: --model DIR and --input PATH (or --data SPEC --faithfulness N) are required\n");
    return 2;
  }
  damo_attribution_options o;
  long index;
  int invert, rc = 1, count = 0;
  if (!parse_options(argc, argv, &o, &index, &invert)) return 2;
  damo_model *m = NULL;
  damo_explainer *e = NULL;
  explain_input *in = NULL;
  float *attr = NULL, *base = NULL, *random_attr = NULL;
  damo_tensor *panel = NULL, *labels = NULL;
  if (damo_model_load(dir, &m) != DAMO_OK || damo_explainer_new_at(m, 64, cli_opt(argc, argv, "--layer"), &e) != DAMO_OK) {
    rc = cli_fail("explain");
    goto done;
  }
  const int64_t D = damo_explainer_input_size(e), C = damo_explainer_classes(e);
  int32_t target;
  if (!parse_target(m, cli_opt(argc, argv, "--target"), C, &target)) {
    rc = 2;
    goto done;
  }
  if (damo_explainer_tokens(e)) { /* a text model: its vocabulary and length from text.json */
    damo_vocab *vocab = NULL;
    int max_len = 0, numbers = 0;
    const int text = cli_text_settings(dir, &vocab, &max_len, &numbers);
    if (text == 0) fprintf(stderr, "damo explain: %s reads token ids but has no text.json (a text model from damo train)\n", dir);
    const int deletion = cli_opt(argc, argv, "--faithfulness") != NULL;
    if (text == 1 && !input && !deletion)
      fprintf(stderr, "damo explain: a text model explains one mail (--input FILE) or runs the deletion test\n");
    rc = text != 1 ? 1
         : deletion ? cli_explain_text_faithfulness(m, e, dir, argc, argv, &o)
         : input    ? cli_explain_text(m, e, vocab, max_len, numbers, argc, argv, &o, target)
                    : 2;
    damo_vocab_free(vocab);
    goto done;
  }
  if (cli_opt(argc, argv, "--faithfulness")) {
    rc = faithfulness(m, e, argc, argv, &o);
    goto done;
  }
  long rows = 1;
  const char *v = cli_opt(argc, argv, "--count");
  if (v && !cli_parse_long(v, "--count", 1, 4096, &rows)) {
    rc = 2;
    goto done;
  }
  if (!load_inputs(m, input, index, rows, invert, &in, &count)) goto done;
  if ((v = cli_opt(argc, argv, "--labels")) &&
      (damo_npy_load(v, &labels) != DAMO_OK || labels->dtype != DAMO_I32 || damo_tensor_numel(labels) < index + count)) {
    if (labels) fprintf(stderr, "damo explain: --labels %s must hold integer labels for rows %ld to %ld\n", v, index,
                        index + count - 1);
    else cli_fail("explain");
    damo_tensor_free(labels);
    goto done;
  }
  attr = malloc((size_t)(count * D) * sizeof *attr);
  base = malloc((size_t)D * sizeof *base);
  if (!attr || !base) goto done;
  const char *const *names;
  const int n_names = damo_model_class_names(m, &names);
  int64_t shape[DAMO_MAX_DIMS];
  const int nd = damo_model_input_shape(m, shape);
  const int picture = nd == 2 || (nd == 3 && (shape[2] == 1 || shape[2] == 3));
  const int64_t H = picture ? shape[0] : 1, W = picture ? shape[1] : D, CH = D / (H * W);
  const int scale = picture ? (int)(W >= 112 ? 1 : (112 + W - 1) / W) : 1;
  const int signed_map = o.method != DAMO_ATTR_SALIENCY && o.method != DAMO_ATTR_SMOOTHGRAD && o.method != DAMO_ATTR_GRAD_CAM;
  if (png && picture) {
    const int64_t side = W * scale, th = H * scale + CAPTION, ish[3] = {count * (th + 8) + 8, 3 * side + 4 * 8 + 16 + 8, 3};
    panel = damo_tensor_new(DAMO_F32, 3, ish);
    if (!panel) goto done;
    float *p = damo_tensor_f32(panel);
    for (int64_t i = 0; i < damo_tensor_numel(panel); i++) p[i] = 255;
  }
  double gap_sum = 0;
  int32_t first_target = target;
  for (int i = 0; i < count; i++) {
    damo_attribution_report rep;
    o.baseline = base;
    if (!make_baseline(m, cli_opt(argc, argv, "--baseline"), in[i].x, base) ||
        damo_attribute(e, in[i].x, target, &o, attr + (int64_t)i * D, &rep) != DAMO_OK) {
      if (damo_last_error()[0]) cli_fail("explain");
      goto done;
    }
    char label[64];
    snprintf(label, sizeof label, "%d", rep.target);
    printf("%s: %s %s (logit %.4f); %s", in[i].name, target < 0 ? "predicted" : "class",
           rep.target < n_names ? names[rep.target] : label, (double)rep.logit, damo_attribution_method_name(o.method));
    if (in[i].truth >= 0) printf(" (true %s)", in[i].truth < n_names ? names[in[i].truth] : "?");
    if (o.method == DAMO_ATTR_GRAD_CAM) printf(" at layer %s", damo_explainer_layer(e));
    if (o.method == DAMO_ATTR_INTEGRATED_GRADIENTS) {
      printf(" (%d %s points): sum %.4f, f(x) - f(baseline) %.4f, completeness gap %.2f%%", o.steps,
             o.gauss_legendre ? "Gauss-Legendre" : "midpoint", rep.sum, (double)(rep.logit - rep.baseline_logit),
             100 * rep.completeness_gap);
      gap_sum += rep.completeness_gap;
    }
    printf("\n");
    if (i == 0) first_target = rep.target;
    if (panel) { /* the caption: the picture's name, the predicted class and probability, the true class */
      float logits[256], p = 0;
      int32_t best = 0;
      if (C <= 256 && damo_explainer_run(e, in[i].x, 1, NULL, logits, NULL) == DAMO_OK) {
        best = class_probability(logits, C, &p);
      }
      char caption[160], pred[48], truth[64] = "";
      const char *base_name = strrchr(in[i].name, '/') ? strrchr(in[i].name, '/') + 1 : in[i].name;
      snprintf(pred, sizeof pred, "%s", best < n_names ? names[best] : "?");
      const int32_t y = labels ? damo_tensor_i32(labels)[index + i] : in[i].truth;
      if (labels || y >= 0) snprintf(truth, sizeof truth, ", true %s", y >= 0 && y < n_names ? names[y] : "?");
      snprintf(caption, sizeof caption, "%.40s: %s %.2f%s", base_name, pred, (double)p, truth);
      draw_row(panel, i, in[i].x, attr + (int64_t)i * D, H, W, CH, scale, signed_map, caption);
    }
  }
  if (o.method == DAMO_ATTR_INTEGRATED_GRADIENTS && count > 1)
    printf("mean completeness gap over %d inputs: %.2f%%\n", count, 100 * gap_sum / count);
  if (cli_flag(argc, argv, "--sanity")) { /* the same method with the weights drawn afresh */
    random_attr = malloc((size_t)D * sizeof *random_attr);
    damo_explainer *re = NULL;
    damo_model *rm = NULL;
    damo_attribution_report rep;
    char config[4096];
    snprintf(config, sizeof config, "%s/config.json", dir);
    if (!random_attr || damo_model_from_config_file(config, &rm) != DAMO_OK || damo_model_build(rm, 12345) != DAMO_OK ||
        damo_explainer_new_at(rm, 64, cli_opt(argc, argv, "--layer"), &re) != DAMO_OK || !make_baseline(rm, cli_opt(argc, argv, "--baseline"), in[0].x, base) ||
        damo_attribute(re, in[0].x, first_target, &o, random_attr, &rep) != DAMO_OK) {
      cli_fail("explain --sanity");
    } else {
      printf("sanity (weights drawn afresh): rank correlation of |attributions| %.3f (near 1: the map does not depend "
             "on what the model learnt)\n", cli_rank_correlation(attr, random_attr, D));
    }
    damo_explainer_free(re);
    damo_model_free(rm);
  }
  if (npy) {
    int64_t ash[DAMO_MAX_DIMS + 1];
    ash[0] = count;
    memcpy(ash + 1, shape, (size_t)nd * sizeof *ash);
    damo_tensor *t = damo_tensor_new(DAMO_F32, count > 1 ? nd + 1 : nd, count > 1 ? ash : shape);
    if (!t || (memcpy(damo_tensor_f32(t), attr, (size_t)(count * D) * sizeof *attr), damo_npy_save(npy, t)) != DAMO_OK) {
      damo_tensor_free(t);
      cli_fail("explain");
      goto done;
    }
    damo_tensor_free(t);
    printf("attributions: %s\n", npy);
  }
  if (png && !picture) fprintf(stderr, "damo explain: no picture for an input that is not one (--attributions keeps the numbers)\n");
  if (panel) {
    if (damo_image_save_png(png, panel) != DAMO_OK) {
      cli_fail("explain");
      goto done;
    }
    printf("picture (input, %s, both; colour bar %s): %s\n", damo_attribution_method_name(o.method),
           signed_map ? "red + / blue -" : "black 0 to white max", png);
  }
  rc = 0;
done:
  for (int i = 0; in && i < count; i++) free(in[i].x);
  free(in), free(attr), free(base), free(random_attr);
  damo_tensor_free(panel);
  damo_tensor_free(labels);
  damo_explainer_free(e);
  damo_model_free(m);
  return rc;
}
