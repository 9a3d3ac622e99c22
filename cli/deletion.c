/* deletion.c - the deletion test's shared parts (damo explain --data SPEC --faithfulness N, for
 * pictures and numbers, text models and BERT): its options, the two orders in which the parts
 * of an input are deleted (by attribution, largest first; and at random), the sums over the
 * inputs, and the printed table and the curves' picture. */
#include "cli.h"

#include <math.h>
#include <stdio.h>

int cli_deletion_begin(cli_deletion *d, int argc, char **argv) {
  *d = (cli_deletion){.spec = cli_opt(argc, argv, "--data"), .curve = cli_opt(argc, argv, "--curve")};
  damo_rng_seed(&d->rng, 77);
  if (!d->spec) {
    fprintf(stderr, "damo explain: --faithfulness N needs --data SPEC (its test split)\n");
    return 0;
  }
  return cli_parse_long(cli_opt(argc, argv, "--faithfulness"), "--faithfulness", 1, 1000000, &d->n);
}

void cli_deletion_orders(cli_deletion *d, const float *score, float sign, int64_t count, int64_t *order) {
  for (int64_t a = 1; a < count; a++) { /* by score, largest first (an insertion sort: count is one input's parts) */
    const int64_t id = order[a];
    int64_t b = a;
    while (b > 0 && sign * score[order[b - 1]] < sign * score[id]) order[b] = order[b - 1], b--;
    order[b] = id;
  }
  for (int64_t a = 0; a < count; a++) order[count + a] = order[a];
  damo_shuffle_indices(order + count, count, &d->rng);
}

int64_t cli_deletion_count(int step, int64_t parts) { return (int64_t)llround(0.05 * step * (double)parts); }

void cli_deletion_add(cli_deletion *d, int kind, int step, double p, double logit, int has_logit) {
  d->p[kind][step] += p;
  d->logit[kind][step] += logit;
  d->has_logit = has_logit;
}

int cli_deletion_report(cli_deletion *d, const char *what, const char *note, const char *x_label, const char *title) {
  enum { STEPS = CLI_DELETION_STEPS };
  if (d->used == 0) {
    fprintf(stderr, "damo explain: no test example of %s could be used\n", d->spec);
    return 0;
  }
  printf("deletion test, %s on %ld test examples of %s (%s):\n  deleted   p(class), by attribution   p(class), random "
         "order\n", what, d->used, d->spec, note);
  float at[STEPS], pa[STEPS], pr[STEPS], la[STEPS], lr[STEPS];
  for (int s = 0; s < STEPS; s++) {
    at[s] = 5.0f * s;
    pa[s] = (float)(d->p[0][s] / d->used), pr[s] = (float)(d->p[1][s] / d->used);
    la[s] = (float)(d->logit[0][s] / d->used), lr[s] = (float)(d->logit[1][s] / d->used);
    printf("  %5.0f%%   %22.4f   %22.4f\n", (double)at[s], (double)pa[s], (double)pr[s]);
  }
  if (!d->curve) return 1;
  static const char *const names[2] = {"by attribution", "random order"};
  const char *const panels[2] = {"logit of the class", "probability of the class"};
  if (damo_plot_panels_png(d->curve, title, STEPS, at, x_label, names, panels, d->has_logit ? la : NULL,
                           d->has_logit ? lr : NULL, pa, pr) != DAMO_OK)
    return !cli_fail("explain");
  printf("curves: %s\n", d->curve);
  return 1;
}
