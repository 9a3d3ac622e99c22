/* gpt2_io.c - GPT-2 in HuggingFace's directory format: config.json and model.safetensors.
 *
 * Loading accepts what the Hub's GPT-2 checkpoints hold: tensor names with or without the
 * "transformer." prefix (GPT2Model vs GPT2LMHeadModel state dicts), the causal-mask buffers
 * "h.{i}.attn.bias" / "h.{i}.attn.masked_bias" (ignored), and "lm_head.weight" when it
 * equals wte (the tied head; a different head cannot be represented and is refused).
 * Anything else unknown, missing or mis-shaped is an error naming the file and tensor. */
#include "models/gpt2.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

static void join(char *buf, size_t cap, const char *dir, const char *file) { snprintf(buf, cap, "%s/%s", dir, file); }

/* ------------------------------------------------------------------ config.json */

/* HuggingFace writes many keys damo has no use for (architectures, task_specific_params,
 * ...), so the object is not closed: only the keys below are read and checked. */
/* config.json's "quantization" object (gpt2_blocks.c or gpt2_int8.c writes it): the block
 * format of the weights, DAMO_BLOCKS_NONE when absent or int8 (then *int8 = 1, of kind *q8). */
static damo_status read_quantization(damo_config_obj *root, damo_block_format *out, int *int8, int8_config *q8) {
  damo_config_obj *q;
  *out = DAMO_BLOCKS_NONE;
  *int8 = 0;
  damo_status st = damo_config_get_object(root, "quantization", 0, &q);
  if (st != DAMO_OK || !q) return st;
  static const char *const formats[] = {"q8_0", "q4_0", "int8", NULL}, *const scale_types[] = {"bf16", NULL},
                           *const activations[] = {"dynamic", "static", NULL};
  int format = 0, block = DAMO_BLOCK_SIZE, scale_type = 0, acts = 0, method = 0;
  int64_t examples = 0;
  const char *const *names;
  int n_names;
  if ((st = damo_config_get_enum(q, "format", formats, DAMO_CFG_REQUIRED, &format)) != DAMO_OK ||
      (st = damo_config_get_int32(q, "block_size", DAMO_BLOCK_SIZE, DAMO_BLOCK_SIZE, 0, &block)) != DAMO_OK ||
      (st = damo_config_get_enum(q, "scale_dtype", scale_types, 0, &scale_type)) != DAMO_OK ||
      (st = damo_config_get_enum(q, "activations", activations, format == 2 ? DAMO_CFG_REQUIRED : 0, &acts)) != DAMO_OK ||
      (st = damo_config_get_enum(q, "method", damo_calibration_names, acts == 1 ? DAMO_CFG_REQUIRED : 0, &method)) !=
          DAMO_OK ||
      (st = damo_config_get_int(q, "calibration_examples", 1, INT64_MAX, acts == 1 ? DAMO_CFG_REQUIRED : 0,
                                &examples)) != DAMO_OK ||
      (st = damo_config_get_strings(q, "float_tensors", 0, 1 << 20, 0, &names, &n_names)) != DAMO_OK ||
      (st = damo_config_close(q)) != DAMO_OK)
    return st;
  if (acts == 1 && format != 2)
    return damo_error(DAMO_ERR_FORMAT, "\"quantization\" of format %s: static activations go with int8 only",
                      formats[format]);
  *int8 = format == 2;
  *q8 = (int8_config){acts == 1, (damo_calibration)method, examples, DAMO_MATMUL_F32}; /* GPT-2 decodes in f32 */
  *out = format == 0 ? DAMO_BLOCKS_Q8_0 : format == 1 ? DAMO_BLOCKS_Q4_0 : DAMO_BLOCKS_NONE;
  return DAMO_OK;
}

static damo_status read_config(damo_config *c, damo_gpt2_config *cfg, damo_block_format *blocks, int *int8,
                               int8_config *q8) {
  const char *path = damo_config_source(c);
  damo_config_obj *root;
  const char *type = NULL, *act = NULL;
  damo_status st = damo_config_root(c, &root);
  if (st == DAMO_OK) st = damo_config_get_string(root, "model_type", 0, &type);
  if (st == DAMO_OK && type && strcmp(type, "gpt2") != 0)
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: model_type is \"%s\", only \"gpt2\" is supported", path, type);
  if (st == DAMO_OK) st = damo_config_get_string(root, "activation_function", 0, &act);
  if (st == DAMO_OK && act && strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0)
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: activation_function %s is not supported (only gelu_new, the tanh GELU)",
                      path, act);
  cfg->layer_norm_epsilon = 1e-5f;
  if (st == DAMO_OK)
    st = damo_config_get_float(root, "layer_norm_epsilon", 0, HUGE_VAL, DAMO_CFG_LO_OPEN, &cfg->layer_norm_epsilon);
  int inverse_idx = 0, scale = 1;
  if (st == DAMO_OK) st = damo_config_get_bool(root, "scale_attn_by_inverse_layer_idx", 0, &inverse_idx);
  if (st == DAMO_OK) st = damo_config_get_bool(root, "scale_attn_weights", 0, &scale);
  if (st == DAMO_OK && (inverse_idx || !scale))
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: %s is not supported (attention scores are scaled by 1/sqrt(head_dim))",
                      path, inverse_idx ? "scale_attn_by_inverse_layer_idx: true" : "scale_attn_weights: false");
  const unsigned req = DAMO_CFG_REQUIRED;
  if (st == DAMO_OK) st = damo_config_get_int32(root, "n_layer", 1, 1000000000, req, &cfg->n_layer);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "n_head", 1, 1000000000, req, &cfg->n_head);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "n_embd", 1, 1000000000, req, &cfg->n_embd);
  /* n_ctx is the older name of n_positions */
  const char *positions = damo_config_type_of(root, "n_positions") == DAMO_CFG_ABSENT &&
                                  damo_config_type_of(root, "n_ctx") != DAMO_CFG_ABSENT
                              ? "n_ctx"
                              : "n_positions";
  if (st == DAMO_OK) st = damo_config_get_int32(root, positions, 1, 1000000000, req, &cfg->n_positions);
  if (st == DAMO_OK) st = damo_config_get_int32(root, "vocab_size", 1, 1000000000, req, &cfg->vocab_size);
  double inner = 4.0 * cfg->n_embd;
  if (st == DAMO_OK && damo_config_type_of(root, "n_inner") != DAMO_CFG_NULL)
    st = damo_config_get_double(root, "n_inner", 0, HUGE_VAL, 0, &inner);
  if (st == DAMO_OK && inner != 4.0 * cfg->n_embd)
    st = damo_error(DAMO_ERR_UNSUPPORTED, "%s: n_inner must be null or 4 n_embd (%d)", path, 4 * cfg->n_embd);
  if (st == DAMO_OK) st = gpt2_check_config(cfg, path);
  if (st == DAMO_OK && blocks) st = read_quantization(root, blocks, int8, q8);
  return st;
}

static damo_status parse_config(const char *path, damo_gpt2_config *cfg, damo_block_format *blocks, int *int8,
                                int8_config *q8) {
  damo_config *c;
  damo_status st = damo_config_read_file(path, &c); /* strict: trailing data, repeated keys */
  if (st != DAMO_OK) return st;
  st = read_config(c, cfg, blocks, int8, q8);
  damo_config_free(c);
  return st;
}

damo_status damo_gpt2_config_load(const char *path, damo_gpt2_config *out) {
  if (!path || !out) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_config_load: NULL argument");
  return parse_config(path, out, NULL, NULL, NULL);
}

damo_status damo_gpt2_config_read(damo_config *c, damo_gpt2_config *out) {
  if (!c || !out) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_config_read: NULL argument");
  return read_config(c, out, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ load */

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The causal-mask buffers of HuggingFace's attention module: h.{i}.attn.bias / masked_bias. */
static int is_mask_buffer(const char *name) {
  return strncmp(name, "h.", 2) == 0 && (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias"));
}

/* Copies tensor t (file name `stored`) into model tensor i, checking dtype and shape. */
static damo_status take_tensor(damo_gpt2 *m, int i, const damo_tensor *t, const char *path, const char *stored) {
  char config[128];
  snprintf(config, sizeof config, "n_embd %d, vocab_size %d, n_positions %d", m->config.n_embd, m->config.vocab_size,
           m->config.n_positions);
  return param_store_take(&m->p, i, t, path, stored, config);
}

static damo_status fill_from_dict(damo_gpt2 *m, const damo_tensor_dict *d, const char *path) {
  const char *prefix = "transformer.";
  size_t plen = strlen(prefix);
  unsigned char *seen = calloc((size_t)m->p.n_tensors, 1);
  if (!seen) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
  const damo_tensor *lm_head = NULL;
  damo_status st = DAMO_OK;
  for (int k = 0; k < d->count && st == DAMO_OK; k++) {
    const char *stored = d->names[k];
    const char *name = strncmp(stored, prefix, plen) == 0 ? stored + plen : stored;
    if (strcmp(stored, "lm_head.weight") == 0) {
      lm_head = d->tensors[k];
      continue;
    }
    if (is_mask_buffer(name)) continue;
    if (store_int8_input_suffix(stored)) { /* read with its static int8 tensor */
      st = store_int8_check_input(&m->q8, d, stored, path);
      continue;
    }
    const damo_tensor *scale = NULL;
    char scale_name[256];
    if (m->blocks != DAMO_BLOCKS_NONE || m->q8.q) { /* NAME.scale goes with NAME; NAME without one is f32 */
      if (ends_with(stored, ".scale")) {
        const size_t base = strlen(stored) - strlen(".scale");
        snprintf(scale_name, sizeof scale_name, "%.*s", (int)base, stored);
        if (!damo_tensor_dict_get(d, scale_name))
          st = damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' scales a tensor '%s' the file does not hold", path, stored,
                          scale_name);
        continue;
      }
      snprintf(scale_name, sizeof scale_name, "%s.scale", stored);
      scale = damo_tensor_dict_get(d, scale_name);
    }
    int i = param_store_index(&m->p, name);
    if (i < 0) {
      st = damo_error(DAMO_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of a %d-layer GPT-2)", path, stored,
                      m->config.n_layer);
    } else if (seen[i]) {
      st = damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' appears twice (with and without the \"%s\" prefix)", path, name,
                      prefix);
    } else {
      seen[i] = 1;
      st = scale && m->q8.q ? gpt2_int8_take(m, i, d, k, scale, path)
           : scale          ? gpt2_take_blocks(m, i, d->tensors[k], scale, path, stored)
                            : take_tensor(m, i, d->tensors[k], path, stored);
    }
  }
  for (int i = 0; i < m->p.n_tensors && st == DAMO_OK; i++)
    if (!seen[i]) st = damo_error(DAMO_ERR_FORMAT, "%s: missing tensor '%s'", path, m->p.names[i]);
  free(seen);
  if (st == DAMO_OK && lm_head) {
    const damo_tensor *wte = m->p.values[0];
    if (lm_head->dtype != DAMO_F32 || lm_head->ndim != 2 || lm_head->shape[0] != wte->shape[0] ||
        lm_head->shape[1] != wte->shape[1] ||
        memcmp(lm_head->data, wte->data, (size_t)damo_tensor_numel(wte) * sizeof(float)) != 0)
      st = damo_error(DAMO_ERR_UNSUPPORTED, "%s: tensor 'lm_head.weight' differs from 'wte.weight'; only a head tied to "
                      "the token embedding is supported", path);
  }
  return st;
}

/* Values in all tensors of d. */
static double dict_values(const damo_tensor_dict *d) {
  double n = 0;
  for (int i = 0; i < d->count; i++) n += (double)damo_tensor_numel(d->tensors[i]);
  return n;
}

damo_status damo_gpt2_load(const char *dir, damo_gpt2 **out) {
  if (!dir || !out) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_load: NULL argument");
  *out = NULL;
  char path[4096], weights[4096];
  damo_gpt2_config cfg;
  join(path, sizeof path, dir, "config.json");
  damo_block_format blocks;
  int int8 = 0;
  int8_config q8 = {0};
  damo_status st = parse_config(path, &cfg, &blocks, &int8, &q8);
  if (st != DAMO_OK) return st;
  /* The weights first (their size is the file's), and the config's sizes checked against
   * them before the parameter block they declare is allocated: embeddings and the 12 E^2
   * of each layer's matrices are a lower bound of what a complete file holds. Far more than
   * the file holds (twice, plus 1M) is refused here; a near miss, such as one layer too
   * many, gets fill_from_dict's message naming the missing tensor. */
  join(weights, sizeof weights, dir, "model.safetensors");
  damo_tensor_dict *d;
  if ((st = damo_safetensors_load(weights, &d)) != DAMO_OK) return st;
  const double E = cfg.n_embd, declared = ((double)cfg.vocab_size + cfg.n_positions) * E + 12.0 * cfg.n_layer * E * E;
  if (declared > 2 * dict_values(d) + (1 << 20)) {
    st = damo_error(DAMO_ERR_FORMAT, "%s: the sizes (n_layer %d, n_embd %d, vocab_size %d, n_positions %d) need at least "
                    "%.0f weights but %s holds %.0f", path, cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.n_positions,
                    declared, weights, dict_values(d));
    damo_tensor_dict_free(d);
    return st;
  }
  damo_gpt2 *m;
  if ((st = gpt2_alloc(&cfg, &m)) != DAMO_OK) {
    damo_tensor_dict_free(d);
    return st;
  }
  if ((st = gpt2_blocks_begin(m, blocks)) == DAMO_OK && int8) st = gpt2_int8_begin(m, &q8);
  if (st == DAMO_OK) st = fill_from_dict(m, d, weights);
  damo_tensor_dict_free(d);
  if (st != DAMO_OK) {
    damo_gpt2_free(m);
    return st;
  }
  *out = m;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ save */

static cJSON *config_json(const damo_gpt2_config *c) {
  cJSON *root = cJSON_CreateObject();
  cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
  if (arch) cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
  cJSON_AddStringToObject(root, "model_type", "gpt2");
  cJSON_AddStringToObject(root, "activation_function", "gelu_new");
  cJSON_AddNumberToObject(root, "n_layer", c->n_layer);
  cJSON_AddNumberToObject(root, "n_head", c->n_head);
  cJSON_AddNumberToObject(root, "n_embd", c->n_embd);
  cJSON_AddNumberToObject(root, "n_positions", c->n_positions);
  cJSON_AddNumberToObject(root, "n_ctx", c->n_positions);
  cJSON_AddNumberToObject(root, "vocab_size", c->vocab_size);
  param_store_json_float(root, "layer_norm_epsilon", c->layer_norm_epsilon);
  cJSON_AddNumberToObject(root, "initializer_range", 0.02);
  /* damo's GPT-2 graphs have no dropout. */
  cJSON_AddNumberToObject(root, "attn_pdrop", 0.0);
  cJSON_AddNumberToObject(root, "embd_pdrop", 0.0);
  cJSON_AddNumberToObject(root, "resid_pdrop", 0.0);
  cJSON_AddBoolToObject(root, "scale_attn_weights", 1);
  cJSON_AddBoolToObject(root, "tie_word_embeddings", 1);
  if (c->vocab_size == 50257) {
    cJSON_AddNumberToObject(root, "bos_token_id", 50256);
    cJSON_AddNumberToObject(root, "eos_token_id", 50256);
  }
  cJSON_AddStringToObject(root, "torch_dtype", "float32");
  return root;
}

/* Files name the tensors as the model does (no "transformer." prefix). */
static void file_name(const param_store *s, int i, char *name, size_t cap) { snprintf(name, cap, "%s", s->names[i]); }

damo_status damo_gpt2_save_as(const damo_gpt2 *m, const char *dir, damo_dtype dtype) {
  if (!m || !dir) return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_save: NULL argument");
  if (gpt2_on_host(m, "gpt2_save") != DAMO_OK) return DAMO_ERR_STATE;
  if ((m->blocks != DAMO_BLOCKS_NONE || m->q8.q) && dtype != DAMO_F32)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_save: a %s model is saved as its %s (dtype f32 for the rest), not %s",
                      m->q8.q ? "int8" : damo_block_format_name(m->blocks), m->q8.q ? "int8 values" : "blocks",
                      damo_dtype_name(dtype));
  if (dtype != DAMO_F32 && dtype != DAMO_BF16)
    return damo_error(DAMO_ERR_INVALID_ARG, "gpt2_save: weights are saved as f32 or bf16, not %s", damo_dtype_name(dtype));
  cJSON *config = config_json(&m->config);
  if (!config) return damo_error(DAMO_ERR_NOMEM, "gpt2_save: out of memory");
  if (dtype == DAMO_BF16) cJSON_ReplaceItemInObject(config, "torch_dtype", cJSON_CreateString("bfloat16"));
  if (m->q8.q) {
    store_int8_json(&m->q8, config);
    return param_store_save_dir_with(&m->p, dir, file_name, config, DAMO_F32, gpt2_int8_writer, m);
  }
  if (m->blocks == DAMO_BLOCKS_NONE) return param_store_save_dir(&m->p, dir, file_name, config, dtype);
  gpt2_blocks_json(m, config);
  damo_tensor_dict *d = damo_tensor_dict_new();
  damo_status st = d ? gpt2_blocks_dict(m, dir, d) : damo_error(DAMO_ERR_NOMEM, "gpt2_save: out of memory");
  if (st == DAMO_OK) return param_store_save_dict(dir, d, config);
  damo_tensor_dict_free(d);
  cJSON_Delete(config);
  return st;
}

damo_status damo_gpt2_save(const damo_gpt2 *m, const char *dir) { return damo_gpt2_save_as(m, dir, DAMO_F32); }
