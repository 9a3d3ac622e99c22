/* config_seq.c - the config JSON of the sequence and transformer layers (Keras' and
 * keras_hub's argument names), read strictly as every layer is (config.c) and written back
 * with every setting, so a saved model reads back the same. */
#include "train/model.h"

#include <stdio.h>

static const char *const padding_1d_names[] = {"valid", "same", "causal", NULL};
static const char *const ff_activation_names[] = {"relu", "gelu", "gelu_approximate", NULL};
static const char *const kernel_layout_names[] = {"in_out", "out_in", NULL};

int damo_is_seq_layer(const damo_layer_type *t) {
  return t == &damo_layer_layer_norm || t == &damo_layer_multi_head_attention || t == &damo_layer_transformer_encoder ||
         t == &damo_layer_transformer_decoder || t == &damo_layer_position_embedding ||
         t == &damo_layer_token_and_position_embedding || t == &damo_layer_conv1d || t == &damo_layer_max_pool1d ||
         t == &damo_layer_avg_pool1d;
}

static const char *padding_1d_name(const damo_layer *l) {
  return padding_1d_names[l->causal ? 2 : l->padding_same ? 1 : 0];
}

void damo_seq_layer_to_json(const damo_layer *l, cJSON *o) {
  const damo_layer_type *t = l->type;
  if (t == &damo_layer_layer_norm) {
    cJSON_AddNumberToObject(o, "epsilon", l->epsilon);
    cJSON_AddBoolToObject(o, "center", l->ln_center);
    cJSON_AddBoolToObject(o, "scale", l->ln_scale);
  } else if (t == &damo_layer_multi_head_attention) {
    cJSON_AddNumberToObject(o, "num_heads", l->num_heads);
    cJSON_AddNumberToObject(o, "key_dim", l->key_dim);
    cJSON_AddNumberToObject(o, "value_dim", l->value_dim ? l->value_dim : l->key_dim);
    if (l->units > 0) cJSON_AddNumberToObject(o, "output_shape", l->units); /* absent: the query's features */
    cJSON_AddNumberToObject(o, "dropout", l->rate);
    cJSON_AddBoolToObject(o, "use_bias", l->use_bias);
    cJSON_AddBoolToObject(o, "use_causal_mask", l->causal);
  } else if (t == &damo_layer_transformer_encoder || t == &damo_layer_transformer_decoder) {
    cJSON_AddNumberToObject(o, "intermediate_dim", l->intermediate_dim);
    cJSON_AddNumberToObject(o, "num_heads", l->num_heads);
    cJSON_AddNumberToObject(o, "dropout", l->rate);
    if (l->attention_rate != l->rate) cJSON_AddNumberToObject(o, "attention_dropout", l->attention_rate);
    cJSON_AddStringToObject(o, "activation", ff_activation_names[l->ff_gelu]);
    cJSON_AddNumberToObject(o, "layer_norm_epsilon", l->epsilon);
    cJSON_AddBoolToObject(o, "normalize_first", l->normalize_first);
    if (l->fused_qkv) cJSON_AddBoolToObject(o, "fused_qkv", 1);
    if (l->kernels_out_in) cJSON_AddStringToObject(o, "kernel_layout", kernel_layout_names[1]);
  } else if (t == &damo_layer_position_embedding) {
    cJSON_AddNumberToObject(o, "sequence_length", l->sequence_length);
  } else if (t == &damo_layer_token_and_position_embedding) {
    cJSON_AddNumberToObject(o, "vocabulary_size", l->input_dim);
    cJSON_AddNumberToObject(o, "sequence_length", l->sequence_length);
    cJSON_AddNumberToObject(o, "embedding_dim", l->units);
    cJSON_AddBoolToObject(o, "mask_zero", l->mask_zero);
  } else if (t == &damo_layer_conv1d) {
    cJSON_AddNumberToObject(o, "filters", l->units);
    cJSON_AddNumberToObject(o, "kernel_size", l->kernel[0]);
    cJSON_AddNumberToObject(o, "strides", l->stride[0]);
    cJSON_AddStringToObject(o, "padding", padding_1d_name(l));
    cJSON_AddStringToObject(o, "activation", damo_activation_name(l->act));
    cJSON_AddStringToObject(o, "kernel_initializer", damo_init_name(l->kernel_init));
    cJSON_AddBoolToObject(o, "use_bias", l->use_bias);
  } else if (t == &damo_layer_max_pool1d || t == &damo_layer_avg_pool1d) {
    cJSON_AddNumberToObject(o, "pool_size", l->kernel[0]);
    cJSON_AddNumberToObject(o, "strides", l->stride[0]);
    cJSON_AddStringToObject(o, "padding", padding_1d_name(l));
  }
}

/* An integer or a one-entry list ([3], as Keras writes a 1-D kernel_size), >= 1. */
static damo_status get_size(damo_config_obj *o, const char *key, unsigned flags, int *inout) {
  int64_t v[1] = {*inout};
  int n = 0;
  TRY(damo_config_get_ints(o, key, 1, 1, 1, 1000000000, 1, flags, v, &n));
  *inout = (int)v[0];
  return DAMO_OK;
}

static damo_status parse_block(damo_config_obj *o, const damo_layer_type *lt, damo_layer **out) {
  TRY(damo_config_check_keys(o, "type name intermediate_dim num_heads dropout attention_dropout activation "
                                "layer_norm_epsilon normalize_first fused_qkv kernel_layout"));
  int intermediate = 0, heads = 0, gelu = 0, normalize_first = 0, fused = 0, out_in = 0;
  float rate = 0, attention_rate = -1, eps = 1e-5f;
  TRY(damo_config_get_int32(o, "intermediate_dim", 1, INT32_MAX, REQ, &intermediate));
  TRY(damo_config_get_int32(o, "num_heads", 1, INT32_MAX, REQ, &heads));
  TRY(damo_config_get_float(o, "dropout", 0, 1, DAMO_CFG_HI_OPEN, &rate));
  TRY(damo_config_get_float(o, "attention_dropout", 0, 1, DAMO_CFG_HI_OPEN, &attention_rate));
  TRY(damo_config_get_enum(o, "activation", ff_activation_names, 0, &gelu));
  TRY(damo_config_get_float(o, "layer_norm_epsilon", 0, 1, DAMO_CFG_LO_OPEN, &eps));
  TRY(damo_config_get_bool(o, "normalize_first", 0, &normalize_first));
  TRY(damo_config_get_bool(o, "fused_qkv", 0, &fused));
  TRY(damo_config_get_enum(o, "kernel_layout", kernel_layout_names, 0, &out_in));
  *out = lt == &damo_layer_transformer_encoder
             ? damo_transformer_encoder_layer(intermediate, heads, rate, gelu, eps, normalize_first)
             : damo_transformer_decoder_layer(intermediate, heads, rate, gelu, eps, normalize_first);
  if (*out && damo_transformer_set_layout(*out, fused, out_in, attention_rate) != DAMO_OK) {
    damo_layer_free(*out);
    *out = NULL;
    return damo_config_fail(o, NULL, DAMO_ERR_FORMAT, "%s", damo_last_error());
  }
  return DAMO_OK;
}

damo_status damo_config_parse_seq_layer(damo_config_obj *o, const damo_layer_type *lt, damo_layer **out) {
  *out = NULL;
  if (lt == &damo_layer_layer_norm) {
    TRY(damo_config_check_keys(o, "type name epsilon center scale"));
    float eps = 1e-3f;
    int center = 1, scale = 1;
    TRY(damo_config_get_float(o, "epsilon", 0, 1, DAMO_CFG_LO_OPEN, &eps));
    TRY(damo_config_get_bool(o, "center", 0, &center));
    TRY(damo_config_get_bool(o, "scale", 0, &scale));
    *out = damo_layer_norm_layer(eps, center, scale);
  } else if (lt == &damo_layer_multi_head_attention) {
    TRY(damo_config_check_keys(o, "type name num_heads key_dim value_dim output_shape dropout use_bias "
                                  "use_causal_mask"));
    int heads = 0, key_dim = 0, value_dim = 0, output = 0, use_bias = 1, causal = 0;
    float rate = 0;
    TRY(damo_config_get_int32(o, "num_heads", 1, INT32_MAX, REQ, &heads));
    TRY(damo_config_get_int32(o, "key_dim", 1, INT32_MAX, REQ, &key_dim));
    TRY(damo_config_get_int32(o, "value_dim", 1, INT32_MAX, 0, &value_dim));
    TRY(get_size(o, "output_shape", 0, &output));
    TRY(damo_config_get_float(o, "dropout", 0, 1, DAMO_CFG_HI_OPEN, &rate));
    TRY(damo_config_get_bool(o, "use_bias", 0, &use_bias));
    TRY(damo_config_get_bool(o, "use_causal_mask", 0, &causal));
    *out = damo_multi_head_attention_layer(heads, key_dim, value_dim, output, rate, use_bias, causal);
  } else if (lt == &damo_layer_transformer_encoder || lt == &damo_layer_transformer_decoder) {
    TRY(parse_block(o, lt, out));
  } else if (lt == &damo_layer_position_embedding) {
    TRY(damo_config_check_keys(o, "type name sequence_length"));
    int length = 0;
    TRY(damo_config_get_int32(o, "sequence_length", 1, INT32_MAX, REQ, &length));
    *out = damo_position_embedding_layer(length);
  } else if (lt == &damo_layer_token_and_position_embedding) {
    TRY(damo_config_check_keys(o, "type name vocabulary_size sequence_length embedding_dim mask_zero"));
    int vocab = 0, length = 0, dim = 0, mask_zero = 0;
    TRY(damo_config_get_int32(o, "vocabulary_size", 1, INT32_MAX, REQ, &vocab));
    TRY(damo_config_get_int32(o, "sequence_length", 1, INT32_MAX, REQ, &length));
    TRY(damo_config_get_int32(o, "embedding_dim", 1, INT32_MAX, REQ, &dim));
    TRY(damo_config_get_bool(o, "mask_zero", 0, &mask_zero));
    *out = damo_token_and_position_embedding_layer(vocab, length, dim, mask_zero);
  } else if (lt == &damo_layer_conv1d) {
    TRY(damo_config_check_keys(o, "type name filters kernel_size strides padding activation kernel_initializer "
                                  "use_bias"));
    int filters = 0, k = 0, stride = 1, padding = 0, use_bias = 1;
    const char *act = NULL, *init = "glorot_uniform";
    TRY(damo_config_get_int32(o, "filters", 1, INT32_MAX, REQ, &filters));
    TRY(get_size(o, "kernel_size", REQ, &k));
    TRY(get_size(o, "strides", 0, &stride));
    TRY(damo_config_get_enum(o, "padding", padding_1d_names, 0, &padding));
    TRY(damo_config_get_string(o, "activation", 0, &act));
    TRY(damo_config_get_string(o, "kernel_initializer", 0, &init));
    TRY(damo_config_get_bool(o, "use_bias", 0, &use_bias));
    damo_activation a;
    damo_init ki;
    if (damo_activation_parse(act, &a) != DAMO_OK || damo_init_parse(init, &ki) != DAMO_OK)
      return damo_config_fail(o, NULL, DAMO_ERR_FORMAT, "%s", damo_last_error());
    *out = damo_conv1d_layer(filters, k, stride, (damo_padding)padding, a);
    if (*out) (*out)->kernel_init = ki, (*out)->use_bias = use_bias;
  } else if (lt == &damo_layer_max_pool1d || lt == &damo_layer_avg_pool1d) {
    TRY(damo_config_check_keys(o, "type name pool_size strides padding"));
    int pool = 2, stride = 0, padding = 0;
    TRY(get_size(o, "pool_size", 0, &pool));
    TRY(get_size(o, "strides", 0, &stride));
    TRY(damo_config_get_enum(o, "padding", padding_1d_names, 0, &padding));
    if (padding == 2) return damo_config_fail(o, "padding", DAMO_ERR_FORMAT, "must be valid or same for a pooling");
    *out = lt == &damo_layer_max_pool1d ? damo_max_pool1d_layer(pool, stride, padding)
                                        : damo_avg_pool1d_layer(pool, stride, padding);
  } else {
    return damo_error(DAMO_ERR_NOT_FOUND, "config: %s is not a sequence layer", lt->type);
  }
  return *out ? DAMO_OK : DAMO_ERR_NOMEM;
}
