/* explainer.h - the explainer's state, shared by attribution.c (inputs of numbers and
 * pictures, Grad-CAM) and tokens.c (inputs of token ids: attributions over the embeddings). */
#ifndef DAMO_EXPLAINER_H
#define DAMO_EXPLAINER_H

#include "train/model.h"

struct damo_explainer {
  damo_model *model;
  damo_graph *g;
  damo_node *x, *logits, *target, *loss;
  damo_node *layer;    /* the layer read: Grad-CAM's feature maps, or a token model's embeddings; or NULL */
  char layer_name[DAMO_NAME_MAX];
  int64_t layer_shape[3]; /* its shape without the batch axis ((height, width, channels), or (T, E)) */
  int64_t batch, row, classes;
  float *target_rows; /* (batch, classes): one-hot rows selecting each row's logit */
  /* token models: the later layers read the embeddings scaled by alpha per row (1: as they
   * are, 0: the zero baseline), and the gradient is taken there */
  int tokens;
  damo_node *alpha, *scaled;
  float *alpha_rows;
};

/* Binds the target rows (n rows of targets, or none) and runs forward (and backward when
 * backward is set); logits (n, classes) copied out when not NULL. */
damo_status explainer_forward(damo_explainer *e, int64_t n, const int32_t *targets, int backward, float *logits);

/* The report's sum of the n attributions and its completeness gap
 * |sum - (logit - baseline_logit)| / |logit - baseline_logit|. */
void explain_complete_report(damo_attribution_report *r, const float *attr, int64_t n);
/* The n-point Gauss-Legendre nodes and weights on [0, 1] (attribution.c). */
void explain_gauss_legendre(int n, double *nodes, double *weights);
/* The rewrite after a token model's embedding: its rows times alpha, gradient kept (tokens.c). */
damo_node *explainer_scale_embeddings(void *ctx, damo_graph *g, damo_node *v);

#endif
