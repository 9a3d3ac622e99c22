/* safetensors.c - reading and writing HuggingFace safetensors files, the weight format of
 * saved models and checkpoints. A file is an 8-byte little-endian header length N, N bytes
 * of JSON ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}) and the data
 * section. Loading validates everything before touching the data: sane N, a JSON object,
 * known dtypes, non-negative shapes, offsets inside the data section, byte counts equal to
 * shape x dtype size, no two tensors overlapping. F16/BF16/F64 become F32 and I64 becomes I32
 * (range-checked). Saving writes F32/I32/U8 with the JSON keys sorted by name, the header
 * padded with spaces to a multiple of 8, and the tensors packed with no gaps (4-byte dtypes
 * first so they stay aligned), which the reference implementation requires. */
#include "core/core.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>

#define MAX_HEADER_BYTES (100u * 1024u * 1024u)

typedef enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I32, ST_I64, ST_U8, ST_I8 } st_dtype;

static const struct {
  const char *name;
  st_dtype code;
  int size;
} st_dtypes[] = {{"F32", ST_F32, 4}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2}, {"F64", ST_F64, 8},
                 {"I32", ST_I32, 4}, {"I64", ST_I64, 8}, {"U8", ST_U8, 1}, {"I8", ST_I8, 1}};

/* Valid safetensors dtypes this build does not read: UNSUPPORTED rather than FORMAT. */
static const char *const st_other_dtypes[] = {"BOOL", "I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2"};

typedef struct st_entry {
  const char *name; /* points into the cJSON tree */
  st_dtype code;
  int size;
  int ndim;
  int64_t shape[DAMO_MAX_DIMS];
  uint64_t begin, end;
} st_entry;

static uint64_t load_le(const unsigned char *p, int size) {
  uint64_t v = 0;
  for (int i = 0; i < size; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static int host_is_little_endian(void) {
  uint16_t one = 1;
  unsigned char first;
  memcpy(&first, &one, 1);
  return first == 1;
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp == 0) {
    float f = ldexpf((float)man, -24);
    return sign ? -f : f;
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* A JSON number that is a whole number in [0, 2^53] (exact in a double). */
static int json_uint(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v)) return 0;
  double d = v->valuedouble;
  if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return 0;
  *out = (uint64_t)d;
  return 1;
}

static damo_status parse_entry(const cJSON *item, const char *path, size_t data_size, st_entry *e) {
  const char *name = item->string;
  e->name = name;
  if (!cJSON_IsObject(item))
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s': expected an object with dtype, shape and data_offsets", path,
                      name);
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
  const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
  if (!cJSON_IsString(dt))
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s': missing or non-string 'dtype'", path, name);
  int found = 0;
  for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
    if (strcmp(dt->valuestring, st_dtypes[i].name) == 0) {
      e->code = st_dtypes[i].code;
      e->size = st_dtypes[i].size;
      found = 1;
    }
  if (!found) {
    for (size_t i = 0; i < sizeof st_other_dtypes / sizeof st_other_dtypes[0]; i++)
      if (strcmp(dt->valuestring, st_other_dtypes[i]) == 0)
        return damo_error(DAMO_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported (expected F32, F16, BF16, "
                          "F64, I32, I64 or U8)", path, name, dt->valuestring);
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.40s' (expected F32, F16, BF16, F64, I32, I64 "
                      "or U8)", path, name, dt->valuestring);
  }

  if (!cJSON_IsArray(shape))
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s': missing or non-array 'shape'", path, name);
  int ndim = cJSON_GetArraySize(shape);
  if (ndim > DAMO_MAX_DIMS)
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions; at most %d are supported", path, name,
                      ndim, DAMO_MAX_DIMS);
  e->ndim = ndim;
  uint64_t numel = 1;
  int overflow = 0;
  for (int i = 0; i < ndim; i++) {
    uint64_t d;
    if (!json_uint(cJSON_GetArrayItem(shape, i), &d))
      return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s': shape entry %d is not a non-negative integer", path, name, i);
    e->shape[i] = (int64_t)d;
    if (d && numel > UINT64_MAX / d) overflow = 1;
    numel *= d;
  }

  uint64_t begin, end;
  if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(cJSON_GetArrayItem(offs, 0), &begin) ||
      !json_uint(cJSON_GetArrayItem(offs, 1), &end))
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end] of non-negative integers",
                      path, name);
  if (begin > end || end > data_size)
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s' data_offsets [%llu, %llu] out of range of the %zu-byte data "
                      "section", path, name, (unsigned long long)begin, (unsigned long long)end, data_size);
  if (overflow || numel > UINT64_MAX / (uint64_t)e->size || numel * (uint64_t)e->size != end - begin) {
    char sh[128];
    return damo_error(DAMO_ERR_FORMAT, "%s: tensor '%s': shape %s of %s needs %s%llu bytes but data_offsets [%llu, %llu] "
                      "span %llu", path, name, damo_shape_string(e->ndim, e->shape, sh, sizeof sh), dt->valuestring,
                      overflow ? "more than " : "", overflow ? (unsigned long long)UINT64_MAX :
                      (unsigned long long)(numel * (uint64_t)e->size), (unsigned long long)begin,
                      (unsigned long long)end, (unsigned long long)(end - begin));
  }
  e->begin = begin;
  e->end = end;
  return DAMO_OK;
}

static damo_status check_metadata(const cJSON *meta, const char *path) {
  if (!cJSON_IsObject(meta))
    return damo_error(DAMO_ERR_FORMAT, "%s: '__metadata__' must be an object of string values", path);
  for (const cJSON *m = meta->child; m; m = m->next)
    if (!cJSON_IsString(m))
      return damo_error(DAMO_ERR_FORMAT, "%s: '__metadata__' entry '%s' is not a string", path, m->string);
  return DAMO_OK;
}

static int cmp_begin(const void *a, const void *b) {
  const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

/* Decodes one validated entry from the data section into a new tensor. */
static damo_status decode_entry(const st_entry *e, const unsigned char *src, const char *path, damo_tensor **out) {
  damo_dtype dt = (e->code == ST_I32 || e->code == ST_I64) ? DAMO_I32 : e->code == ST_U8 ? DAMO_U8 : e->code == ST_I8 ? DAMO_I8 : DAMO_F32;
  damo_tensor *t = damo_tensor_new(dt, e->ndim, e->shape);
  if (!t) return damo_error_prefix(DAMO_ERR_NOMEM, "%s: tensor '%s': ", path, e->name);
  size_t n = (size_t)((e->end - e->begin) / (uint64_t)e->size);
  int native = host_is_little_endian();
  if (e->code == ST_U8 || e->code == ST_I8 || ((e->code == ST_F32 || e->code == ST_I32) && native)) {
    if (n) memcpy(t->data, src, n * (size_t)e->size);
    *out = t;
    return DAMO_OK;
  }
  float *f = t->data;
  int32_t *iv = t->data;
  for (size_t i = 0; i < n; i++) {
    uint64_t u = load_le(src + i * (size_t)e->size, e->size);
    switch (e->code) {
    case ST_F32: {
      uint32_t b = (uint32_t)u;
      memcpy(&f[i], &b, 4);
      break;
    }
    case ST_F16: f[i] = half_to_float((uint16_t)u); break;
    case ST_BF16: {
      uint32_t b = (uint32_t)u << 16;
      memcpy(&f[i], &b, 4);
      break;
    }
    case ST_F64: {
      double d;
      memcpy(&d, &u, 8);
      if (isfinite(d) && fabs(d) > FLT_MAX) {
        damo_tensor_free(t);
        return damo_error(DAMO_ERR_UNSUPPORTED, "%s: tensor '%s': value %g at index %zu does not fit in f32", path,
                          e->name, d, i);
      }
      f[i] = (float)d;
      break;
    }
    case ST_I32: iv[i] = (int32_t)(u & 0x80000000u ? -(int64_t)(~u & 0xffffffffu) - 1 : (int64_t)u); break;
    case ST_I64: {
      int64_t v = u >> 63 ? -(int64_t)(~u) - 1 : (int64_t)u;
      if (v < INT32_MIN || v > INT32_MAX) {
        damo_tensor_free(t);
        return damo_error(DAMO_ERR_UNSUPPORTED, "%s: tensor '%s': I64 value %lld at index %zu does not fit in i32",
                          path, e->name, (long long)v, i);
      }
      iv[i] = (int32_t)v;
      break;
    }
    case ST_U8:
    case ST_I8: break; /* handled above */
    }
  }
  *out = t;
  return DAMO_OK;
}

static damo_status load_buffer(const unsigned char *buf, size_t size, const char *path, damo_tensor_dict **out) {
  if (size < 8)
    return damo_error(DAMO_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file (expected an 8-byte header "
                      "length first)", path, size);
  uint64_t n = load_le(buf, 8);
  if (n > size - 8)
    return damo_error(DAMO_ERR_FORMAT, "%s: header length %llu is larger than the %zu bytes that follow it (truncated "
                      "or not a safetensors file)", path, (unsigned long long)n, size - 8);
  if (n > MAX_HEADER_BYTES)
    return damo_error(DAMO_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", path, (unsigned long long)n,
                      MAX_HEADER_BYTES);
  if (n < 2 || buf[8] != '{')
    return damo_error(DAMO_ERR_FORMAT, "%s: header is not a JSON object (expected '{' at byte 8)", path);
  /* Strict JSON: only padding white space may follow the value, a tensor named twice is
   * an error; offsets in messages are the file's (the header starts at byte 8). */
  char source[4200];
  snprintf(source, sizeof source, "%s: JSON header", path);
  cJSON *root = NULL;
  damo_status jst = damo_json_parse_at((const char *)buf + 8, (size_t)n, 8, source, 0, &root);
  if (jst != DAMO_OK) return jst;
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return damo_error(DAMO_ERR_FORMAT, "%s: header is JSON but not an object", path);
  }

  const unsigned char *data = buf + 8 + n;
  size_t data_size = size - 8 - (size_t)n;
  int count = 0;
  for (const cJSON *c = root->child; c; c = c->next) count++;
  st_entry *entries = calloc((size_t)count + 1, sizeof *entries);
  st_entry **order = calloc((size_t)count + 1, sizeof *order);
  damo_tensor_dict *d = damo_tensor_dict_new();
  damo_status s = DAMO_OK;
  if (!entries || !order || !d) s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %d header entries", path, count);
  int ne = 0;
  for (const cJSON *c = root->child; c && !s; c = c->next) {
    if (strcmp(c->string, "__metadata__") == 0) {
      s = check_metadata(c, path);
      continue;
    }
    /* a name given twice was refused by damo_json_parse (duplicate key) */
    s = parse_entry(c, path, data_size, &entries[ne]);
    if (!s) {
      order[ne] = &entries[ne];
      ne++;
    }
  }
  if (!s && ne > 1) {
    qsort(order, (size_t)ne, sizeof *order, cmp_begin);
    /* Sorted by begin, a non-empty tensor overlaps an earlier one iff it starts before the
     * furthest end seen so far. Empty tensors occupy no bytes and cannot overlap. */
    const st_entry *reach = NULL;
    for (int i = 0; i < ne && !s; i++) {
      const st_entry *e = order[i];
      if (e->begin == e->end) continue;
      if (reach && e->begin < reach->end)
        s = damo_error(DAMO_ERR_FORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", path,
                       reach->name, (unsigned long long)reach->begin, (unsigned long long)reach->end, e->name,
                       (unsigned long long)e->begin, (unsigned long long)e->end);
      if (!reach || e->end > reach->end) reach = e;
    }
  }
  for (int i = 0; i < ne && !s; i++) {
    damo_tensor *t = NULL;
    s = decode_entry(&entries[i], data + entries[i].begin, path, &t);
    if (!s) s = damo_tensor_dict_add(d, entries[i].name, t);
  }
  free(entries);
  free(order);
  cJSON_Delete(root);
  if (s) {
    damo_tensor_dict_free(d);
    return s;
  }
  *out = d;
  return DAMO_OK;
}

damo_status damo_safetensors_load(const char *path, damo_tensor_dict **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "safetensors_load: NULL output");
  *out = NULL;
  if (!path) return damo_error(DAMO_ERR_INVALID_ARG, "safetensors_load: NULL path");
  char *buf;
  size_t size;
  damo_status s = damo_read_file(path, &buf, &size);
  if (s) return s;
  s = load_buffer((const unsigned char *)buf, size, path, out);
  free(buf);
  return s;
}

/* ------------------------------------------------------------------ save */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(sbuf *b, const char *s) {
  sb_put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      sb_put(b, esc, 2);
    } else if (c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", c);
      sb_str(b, esc);
    } else {
      sb_put(b, s, 1);
    }
  }
  sb_put(b, "\"", 1);
}

static int cmp_name(const damo_tensor_dict *d, int a, int b) { return strcmp(d->names[a], d->names[b]); }

/* Data order: wider dtypes first so every tensor stays aligned to its item size. */
static int cmp_layout(const damo_tensor_dict *d, int a, int b) {
  size_t sa = damo_dtype_size(d->tensors[a]->dtype), sb = damo_dtype_size(d->tensors[b]->dtype);
  if (sa != sb) return sa > sb ? -1 : 1;
  return cmp_name(d, a, b);
}

/* Insertion sort of indices: dicts are small, and qsort has no context argument (a static
 * would make concurrent saves race). */
static void sort_indices(int *idx, int n, const damo_tensor_dict *d, int (*cmp)(const damo_tensor_dict *, int, int)) {
  for (int i = 1; i < n; i++) {
    int v = idx[i], j = i;
    while (j > 0 && cmp(d, idx[j - 1], v) > 0) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = v;
  }
}

static const char *st_name(damo_dtype t) {
  return t == DAMO_F32 ? "F32" : t == DAMO_I32 ? "I32" : t == DAMO_U8 ? "U8" : t == DAMO_I8 ? "I8" : t == DAMO_BF16 ? "BF16" : NULL;
}

damo_status damo_safetensors_save(const char *path, const damo_tensor_dict *d, const char *const *meta_kv,
                                  int n_meta) {
  if (!path || !d) return damo_error(DAMO_ERR_INVALID_ARG, "safetensors_save: NULL %s", path ? "dict" : "path");
  if (n_meta < 0 || (n_meta > 0 && !meta_kv))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: %d metadata pairs but no list", path, n_meta);
  for (int i = 0; i < 2 * n_meta; i++)
    if (!meta_kv[i]) return damo_error(DAMO_ERR_INVALID_ARG, "%s: metadata entry %d is NULL", path, i);
  for (int i = 0; i < d->count; i++) {
    const damo_tensor *t = d->tensors[i];
    if (!d->names[i][0] || strcmp(d->names[i], "__metadata__") == 0)
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: '%s' cannot be used as a tensor name", path, d->names[i]);
    if (!t || !st_name(t->dtype) || t->ndim < 0 || t->ndim > DAMO_MAX_DIMS || (damo_tensor_numel(t) && !t->data))
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: tensor '%s' is not a valid F32/BF16/I32/U8 tensor", path, d->names[i]);
  }

  int *by_name = malloc(((size_t)d->count + 1) * sizeof *by_name);
  int *by_layout = malloc(((size_t)d->count + 1) * sizeof *by_layout);
  uint64_t *begin = malloc(((size_t)d->count + 1) * sizeof *begin);
  if (!by_name || !by_layout || !begin) {
    free(by_name);
    free(by_layout);
    free(begin);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
  }
  for (int i = 0; i < d->count; i++) by_name[i] = by_layout[i] = i;
  sort_indices(by_name, d->count, d, cmp_name);
  sort_indices(by_layout, d->count, d, cmp_layout);
  uint64_t data_size = 0;
  for (int k = 0; k < d->count; k++) {
    begin[by_layout[k]] = data_size;
    data_size += damo_tensor_nbytes(d->tensors[by_layout[k]]);
  }

  sbuf h = {0};
  sb_str(&h, "{");
  int first = 1;
  if (n_meta > 0) {
    sb_str(&h, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
      if (i) sb_str(&h, ",");
      sb_json_string(&h, meta_kv[2 * i]);
      sb_str(&h, ":");
      sb_json_string(&h, meta_kv[2 * i + 1]);
    }
    sb_str(&h, "}");
    first = 0;
  }
  for (int k = 0; k < d->count; k++) {
    int i = by_name[k];
    const damo_tensor *t = d->tensors[i];
    char num[64];
    if (!first) sb_str(&h, ",");
    first = 0;
    sb_json_string(&h, d->names[i]);
    sb_str(&h, ":{\"dtype\":\"");
    sb_str(&h, st_name(t->dtype));
    sb_str(&h, "\",\"shape\":[");
    for (int a = 0; a < t->ndim; a++) {
      snprintf(num, sizeof num, a ? ",%lld" : "%lld", (long long)t->shape[a]);
      sb_str(&h, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)begin[i],
             (unsigned long long)(begin[i] + damo_tensor_nbytes(t)));
    sb_str(&h, num);
  }
  sb_str(&h, "}");
  while (!h.oom && h.len % 8) sb_str(&h, " ");

  damo_status s = DAMO_OK;
  size_t total = 8 + h.len + (size_t)data_size;
  unsigned char *out = h.oom ? NULL : malloc(total);
  if (!out) {
    s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %zu bytes", path, total);
  } else {
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    memcpy(out + 8, h.p, h.len);
    unsigned char *dst = out + 8 + h.len;
    int native = host_is_little_endian();
    for (int i = 0; i < d->count; i++) {
      const damo_tensor *t = d->tensors[i];
      size_t nb = damo_tensor_nbytes(t), w = damo_dtype_size(t->dtype);
      unsigned char *p = dst + begin[i];
      if (nb) memcpy(p, t->data, nb);
      if (!native && w > 1) /* store little-endian */
        for (size_t e = 0; e < nb; e += w)
          for (size_t a = 0, b = w - 1; a < b; a++, b--) {
            unsigned char c = p[e + a];
            p[e + a] = p[e + b];
            p[e + b] = c;
          }
    }
    s = damo_write_file_atomic(path, out, total);
  }
  free(out);
  free(h.p);
  free(by_name);
  free(by_layout);
  free(begin);
  return s;
}
