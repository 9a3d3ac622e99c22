/* config_reader.c - the one reader of damo's JSON configs: the Sequential config, the GPT-2
 * and BERT config.json files with their "train" / "pretrain" / "finetune" objects, and the
 * small JSON files of model directories. A file is parsed once (damo_json_parse, strict);
 * typed getters check each value's kind and range and name the file and the key's path in
 * their errors; each object remembers which keys were asked for, so damo_config_close can
 * refuse the others (a typo such as "log_evry" would otherwise leave a default in force). */
#include "core/core.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>

struct damo_config_obj {
  damo_config *doc;
  const cJSON *json;
  char *path;  /* JSON path for messages: "" (the top), "\"train\"", "\"layers\"[2]" */
  char *label; /* set: messages read "LABEL: 'key' ..." (damo_config_set_label) */
  char **known;
  int n_known, cap_known;
};

struct damo_config {
  char *source;
  cJSON *root;
  int owns_root;
  damo_config_obj **objs; /* every object handed out, freed with the config */
  int n_objs, cap_objs;
  void **allocs; /* string lists handed out */
  int n_allocs, cap_allocs;
};

/* ------------------------------------------------------------------ documents */

static damo_status wrap(cJSON *root, int owns, const char *source, damo_config **out) {
  damo_config *c = calloc(1, sizeof *c);
  if (!c || !(c->source = damo_strdup(source ? source : "config"))) {
    free(c);
    if (owns) cJSON_Delete(root);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", source ? source : "config");
  }
  c->root = root, c->owns_root = owns;
  *out = c;
  return DAMO_OK;
}

damo_status damo_config_parse(const char *text, size_t len, const char *source, damo_config **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "damo_config_parse: NULL output");
  *out = NULL;
  cJSON *root = NULL;
  damo_status st = damo_json_parse(text, len, source ? source : "config", 0, &root);
  return st != DAMO_OK ? st : wrap(root, 1, source, out);
}

damo_status damo_config_read_file(const char *path, damo_config **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "damo_config_read_file: NULL output");
  *out = NULL;
  cJSON *root = NULL;
  damo_status st = damo_json_read_file(path, 0, &root);
  return st != DAMO_OK ? st : wrap(root, 1, path, out);
}

damo_status damo_config_borrow(const cJSON *root, const char *source, damo_config **out) {
  *out = NULL;
  return wrap((cJSON *)root, 0, source, out);
}

void damo_config_free(damo_config *c) {
  if (!c) return;
  for (int i = 0; i < c->n_objs; i++) {
    damo_config_obj *o = c->objs[i];
    for (int k = 0; k < o->n_known; k++) free(o->known[k]);
    free(o->known);
    free(o->path);
    free(o->label);
    free(o);
  }
  for (int i = 0; i < c->n_allocs; i++) free(c->allocs[i]);
  free(c->allocs);
  free(c->objs);
  if (c->owns_root) cJSON_Delete(c->root);
  free(c->source);
  free(c);
}

const char *damo_config_source(const damo_config *c) { return c ? c->source : ""; }

/* The object view of json (one per JSON object, so the keys asked for add up). */
static damo_status object_for(damo_config *c, const cJSON *json, const char *path, const char *label,
                              damo_config_obj **out) {
  for (int i = 0; i < c->n_objs; i++)
    if (c->objs[i]->json == json) {
      *out = c->objs[i];
      return DAMO_OK;
    }
  *out = NULL;
  if (c->n_objs == c->cap_objs) {
    int cap = c->cap_objs ? 2 * c->cap_objs : 8;
    damo_config_obj **bigger = realloc(c->objs, (size_t)cap * sizeof *bigger);
    if (!bigger) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", c->source);
    c->objs = bigger, c->cap_objs = cap;
  }
  damo_config_obj *o = calloc(1, sizeof *o);
  if (!o || !(o->path = damo_strdup(path)) || (label && !(o->label = damo_strdup(label)))) {
    if (o) free(o->path);
    free(o);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", c->source);
  }
  o->doc = c, o->json = json;
  c->objs[c->n_objs++] = o;
  *out = o;
  return DAMO_OK;
}

damo_status damo_config_root(damo_config *c, damo_config_obj **out) {
  if (!c || !out) return damo_error(DAMO_ERR_INVALID_ARG, "damo_config_root: NULL argument");
  *out = NULL;
  if (!cJSON_IsObject(c->root)) return damo_error(DAMO_ERR_FORMAT, "%s: expected a JSON object ({...})", c->source);
  return object_for(c, c->root, "", NULL, out);
}

damo_status damo_config_set_label(damo_config_obj *o, const char *label) {
  char *copy = damo_strdup(label ? label : "");
  if (!copy) return DAMO_ERR_NOMEM;
  free(o->label);
  o->label = copy;
  return DAMO_OK;
}

/* ------------------------------------------------------------------ messages */

/* "SOURCE: " or, labelled, "SOURCE: LABEL: ". */
static void prefix(const damo_config_obj *o, char *buf, size_t cap) {
  if (o->label && o->label[0]) snprintf(buf, cap, "%s: %s: ", o->doc->source, o->label);
  else snprintf(buf, cap, "%s: ", o->doc->source);
}

/* How a key is named: "'key'" after a label, else its JSON path "\"train\".\"key\"". */
static void key_ref(const damo_config_obj *o, const char *key, char *buf, size_t cap) {
  if (o->label) snprintf(buf, cap, "'%.100s'", key);
  else snprintf(buf, cap, "%s%s\"%.100s\"", o->path, o->path[0] ? "." : "", key);
}

static damo_status vfail(const damo_config_obj *o, const char *key, damo_status code, const char *fmt, va_list ap) {
  char pre[400], ref[400], msg[600];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (!o) return damo_error(code, "config: %s%s%s", key ? key : "", key ? " " : "", msg);
  prefix(o, pre, sizeof pre);
  if (key) key_ref(o, key, ref, sizeof ref);
  else if (!o->label && o->path[0]) snprintf(ref, sizeof ref, "%s:", o->path);
  else ref[0] = '\0';
  return damo_error(code, "%s%s%s%s", pre, ref, ref[0] ? " " : "", msg);
}

damo_status damo_config_fail(const damo_config_obj *o, const char *key, damo_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  damo_status st = vfail(o, key, code, fmt, ap);
  va_end(ap);
  return st;
}

static damo_status missing(const damo_config_obj *o, const char *key) {
  char pre[400], ref[400];
  prefix(o, pre, sizeof pre);
  key_ref(o, key, ref, sizeof ref);
  return damo_error(DAMO_ERR_FORMAT, "%smissing %s", pre, ref);
}

/* What a value is, for "got ...". */
static void describe(const cJSON *v, char *buf, size_t cap) {
  if (cJSON_IsNumber(v)) snprintf(buf, cap, "%g", v->valuedouble);
  else if (cJSON_IsString(v)) snprintf(buf, cap, "\"%.60s\"", v->valuestring);
  else if (cJSON_IsBool(v)) snprintf(buf, cap, "%s", cJSON_IsTrue(v) ? "true" : "false");
  else if (cJSON_IsNull(v)) snprintf(buf, cap, "null");
  else snprintf(buf, cap, "%s", cJSON_IsArray(v) ? "a list" : "an object");
}

/* ------------------------------------------------------------------ keys */

static int is_known(const damo_config_obj *o, const char *key) {
  for (int k = 0; k < o->n_known; k++)
    if (!strcmp(o->known[k], key)) return 1;
  return 0;
}

/* Records key as asked for; the value (NULL when absent). Out of memory only shortens the
 * known list, which can make close refuse a key: never accept a wrong one. */
static const cJSON *ask(damo_config_obj *o, const char *key) {
  if (!o || !key) return NULL; /* no object (a root that was not one): every key is absent */
  if (!is_known(o, key)) {
    if (o->n_known == o->cap_known) {
      int cap = o->cap_known ? 2 * o->cap_known : 16;
      char **bigger = realloc(o->known, (size_t)cap * sizeof *bigger);
      if (bigger) o->known = bigger, o->cap_known = cap;
    }
    char *copy = o->n_known < o->cap_known ? strdup(key) : NULL;
    if (copy) o->known[o->n_known++] = copy;
  }
  return cJSON_GetObjectItemCaseSensitive(o->json, key);
}

damo_config_type damo_config_type_of(damo_config_obj *o, const char *key) {
  const cJSON *v = ask(o, key);
  if (!v) return DAMO_CFG_ABSENT;
  if (cJSON_IsNull(v)) return DAMO_CFG_NULL;
  if (cJSON_IsBool(v)) return DAMO_CFG_BOOL;
  if (cJSON_IsNumber(v)) return DAMO_CFG_NUMBER;
  if (cJSON_IsString(v)) return DAMO_CFG_STRING;
  return cJSON_IsArray(v) ? DAMO_CFG_ARRAY : DAMO_CFG_OBJECT;
}

int damo_config_count(const damo_config_obj *o) { return o ? cJSON_GetArraySize(o->json) : 0; }

/* Edit distance of two short keys (capped at 64 bytes each), for "did you mean". */
static int distance(const char *a, const char *b) {
  size_t n = strlen(a), m = strlen(b);
  if (n > 64 || m > 64) return 99;
  int row[65];
  for (size_t j = 0; j <= m; j++) row[j] = (int)j;
  for (size_t i = 1; i <= n; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= m; j++) {
      int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up, row[j] = best;
    }
  }
  return row[m];
}

damo_status damo_config_close(damo_config_obj *o) {
  if (!o) return DAMO_OK;
  for (const cJSON *it = o->json->child; it; it = it->next) {
    const char *key = it->string ? it->string : "";
    if (is_known(o, key)) continue;
    char list[600] = "", pre[400], ref[400], hint[240] = "";
    size_t used = 0;
    int best = 3, best_k = -1; /* a suggestion within 2 edits, and fewer than the key's length */
    for (int k = 0; k < o->n_known; k++) {
      int w = snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "", o->known[k]);
      if (w > 0 && (size_t)w < sizeof list - used) used += (size_t)w;
      int d = distance(key, o->known[k]);
      if (d < best && d < (int)strlen(key)) best = d, best_k = k;
    }
    if (!key[0]) return damo_config_fail(o, NULL, DAMO_ERR_FORMAT, "empty key \"\" (known: %s)", list);
    prefix(o, pre, sizeof pre);
    key_ref(o, key, ref, sizeof ref);
    if (best_k >= 0) {
      const char q = o->label ? '\'' : '"';
      snprintf(hint, sizeof hint, "; did you mean %c%.100s%c?", q, o->known[best_k], q);
    }
    return damo_error(DAMO_ERR_FORMAT, "%sunknown key %s (known: %s)%s", pre, ref, list, hint);
  }
  return DAMO_OK;
}

/* ------------------------------------------------------------------ getters */

/* The value of key, or NULL: absent (an error when required) or of the wrong kind (error). */
static damo_status value(damo_config_obj *o, const char *key, unsigned flags, const cJSON **v) {
  *v = NULL;
  if (!o || !key) return damo_error(DAMO_ERR_INVALID_ARG, "damo_config: NULL object or key");
  *v = ask(o, key);
  return !*v && (flags & DAMO_CFG_REQUIRED) ? missing(o, key) : DAMO_OK;
}

static damo_status bad(const damo_config_obj *o, const char *key, const cJSON *v, const char *expected) {
  char got[100];
  describe(v, got, sizeof got);
  return damo_config_fail(o, key, DAMO_ERR_FORMAT, "must be %s, got %s", expected, got);
}

/* "[lo, hi]", "(lo, hi)", ">= lo" for an open-ended range. */
static void range_text(double lo, double hi, unsigned flags, char *buf, size_t cap) {
  if (isinf(lo) && isinf(hi)) snprintf(buf, cap, "finite");
  else if (isinf(hi)) snprintf(buf, cap, "%s %g", flags & DAMO_CFG_LO_OPEN ? ">" : ">=", lo);
  else
    snprintf(buf, cap, "in %c%g, %g%c", flags & DAMO_CFG_LO_OPEN ? '(' : '[', lo, hi,
             flags & DAMO_CFG_HI_OPEN ? ')' : ']');
}

static int in_range(double d, double lo, double hi, unsigned flags) {
  int above = flags & DAMO_CFG_LO_OPEN ? d > lo : d >= lo;
  int below = flags & DAMO_CFG_HI_OPEN ? d < hi : d <= hi;
  return above && below;
}

/* An integer in [lo, hi] from v (checked exactly below 2^53). */
static damo_status int_value(const damo_config_obj *o, const char *what, const cJSON *v, int64_t lo, int64_t hi,
                             int64_t *out) {
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9007199254740992.0)
    return bad(o, what, v, "an integer");
  char range[160];
  if (hi == INT64_MAX) snprintf(range, sizeof range, "an integer >= %lld", (long long)lo);
  else snprintf(range, sizeof range, "an integer in [%lld, %lld]", (long long)lo, (long long)hi);
  if (!(v->valuedouble >= (double)lo && v->valuedouble <= (double)hi)) return bad(o, what, v, range);
  *out = (int64_t)v->valuedouble;
  return DAMO_OK;
}

damo_status damo_config_get_int(damo_config_obj *o, const char *key, int64_t lo, int64_t hi, unsigned flags,
                                int64_t *inout) {
  const cJSON *v;
  damo_status st = value(o, key, flags, &v);
  return st != DAMO_OK || !v ? st : int_value(o, key, v, lo, hi, inout);
}

damo_status damo_config_get_int32(damo_config_obj *o, const char *key, int lo, int hi, unsigned flags, int *inout) {
  int64_t x = *inout;
  damo_status st = damo_config_get_int(o, key, lo, hi, flags, &x);
  if (st == DAMO_OK) *inout = (int)x;
  return st;
}

damo_status damo_config_get_double(damo_config_obj *o, const char *key, double lo, double hi, unsigned flags,
                                   double *inout) {
  const cJSON *v;
  damo_status st = value(o, key, flags, &v);
  if (st != DAMO_OK || !v) return st;
  /* After a label, the Sequential config's "must be in [0, 1)"; on a path, "a number in". */
  char range[160], expected[200];
  range_text(lo, hi, flags, range, sizeof range);
  if (isinf(lo) && isinf(hi)) snprintf(expected, sizeof expected, "a finite number");
  else snprintf(expected, sizeof expected, "%s%s", o->label ? "" : "a number ", range);
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad(o, key, v, o->label ? "a finite number" : "a number");
  if (!in_range(v->valuedouble, lo, hi, flags)) return bad(o, key, v, expected);
  *inout = v->valuedouble;
  return DAMO_OK;
}

damo_status damo_config_get_float(damo_config_obj *o, const char *key, double lo, double hi, unsigned flags,
                                  float *inout) {
  double d = *inout;
  damo_status st = damo_config_get_double(o, key, lo, hi, flags, &d);
  if (st == DAMO_OK) *inout = (float)d;
  return st;
}

damo_status damo_config_get_bool(damo_config_obj *o, const char *key, unsigned flags, int *inout) {
  const cJSON *v;
  damo_status st = value(o, key, flags, &v);
  if (st != DAMO_OK || !v) return st;
  if (!cJSON_IsBool(v)) return bad(o, key, v, "true or false");
  *inout = cJSON_IsTrue(v);
  return DAMO_OK;
}

damo_status damo_config_get_string(damo_config_obj *o, const char *key, unsigned flags, const char **inout) {
  const cJSON *v;
  damo_status st = value(o, key, flags, &v);
  if (st != DAMO_OK || !v) return st;
  if (!cJSON_IsString(v)) return bad(o, key, v, "a string");
  *inout = v->valuestring;
  return DAMO_OK;
}

damo_status damo_config_get_enum(damo_config_obj *o, const char *key, const char *const *names, unsigned flags,
                                 int *inout) {
  const char *s = NULL;
  damo_status st = damo_config_get_string(o, key, flags, &s);
  if (st != DAMO_OK || !s) return st;
  char list[400] = "";
  size_t used = 0;
  for (int i = 0; names[i]; i++) {
    if (!strcmp(names[i], s)) {
      *inout = i;
      return DAMO_OK;
    }
    int w = snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "", names[i]);
    if (w > 0 && (size_t)w < sizeof list - used) used += (size_t)w;
  }
  return damo_config_fail(o, key, DAMO_ERR_FORMAT, "must be one of %s, got \"%.60s\"", list, s);
}

/* A list of min_n..max_n entries: its array, or an error naming the count expected. */
static damo_status list_value(damo_config_obj *o, const char *key, int min_n, int max_n, unsigned flags,
                              const char *entries, const cJSON **v) {
  damo_status st = value(o, key, flags, v);
  if (st != DAMO_OK || !*v) return st;
  int n = cJSON_GetArraySize(*v);
  if (cJSON_IsArray(*v) && n >= min_n && n <= max_n) return DAMO_OK;
  char expected[200];
  if (max_n == INT32_MAX) snprintf(expected, sizeof expected, "a list of at least %d %s", min_n, entries);
  else if (min_n == max_n) snprintf(expected, sizeof expected, "a list of %d %s", min_n, entries);
  else snprintf(expected, sizeof expected, "a list of %d to %d %s", min_n, max_n, entries);
  if (cJSON_IsArray(*v)) return damo_config_fail(o, key, DAMO_ERR_FORMAT, "must be %s, got %d", expected, n);
  return bad(o, key, *v, expected);
}

/* "'key' entry 2" / "\"key\"[2]" for the messages about one entry of a list. */
static damo_status entry_fail(const damo_config_obj *o, const char *key, int i, const char *fmt, const char *a,
                              const char *b) {
  char ref[300], msg[400];
  key_ref(o, key, ref, sizeof ref);
  snprintf(msg, sizeof msg, fmt, a, b);
  char pre[400];
  prefix(o, pre, sizeof pre);
  if (o->label) return damo_error(DAMO_ERR_FORMAT, "%s%s entry %d %s", pre, ref, i, msg);
  return damo_error(DAMO_ERR_FORMAT, "%s%s[%d] %s", pre, ref, i, msg);
}

damo_status damo_config_get_strings(damo_config_obj *o, const char *key, int min_n, int max_n, unsigned flags,
                                    const char *const **out, int *n) {
  const cJSON *v;
  damo_status st = list_value(o, key, min_n, max_n, flags, "strings", &v);
  if (st != DAMO_OK || !v) return st;
  int count = cJSON_GetArraySize(v);
  damo_config *c = o->doc;
  if (c->n_allocs == c->cap_allocs) {
    int cap = c->cap_allocs ? 2 * c->cap_allocs : 4;
    void **bigger = realloc(c->allocs, (size_t)cap * sizeof *bigger);
    if (!bigger) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", c->source);
    c->allocs = bigger, c->cap_allocs = cap;
  }
  const char **list = malloc((size_t)(count ? count : 1) * sizeof *list);
  if (!list) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", c->source);
  int i = 0;
  for (const cJSON *it = v->child; it; it = it->next, i++) {
    if (!cJSON_IsString(it)) {
      char got[100];
      describe(it, got, sizeof got);
      free(list);
      return entry_fail(o, key, i, "must be a string, got %s%s", got, "");
    }
    list[i] = it->valuestring;
  }
  c->allocs[c->n_allocs++] = list;
  *out = list;
  *n = count;
  return DAMO_OK;
}

damo_status damo_config_get_ints(damo_config_obj *o, const char *key, int min_n, int max_n, int64_t lo, int64_t hi,
                                 int scalar_fill, unsigned flags, int64_t *out, int *n) {
  const cJSON *v;
  damo_status st = value(o, key, flags, &v);
  if (st != DAMO_OK || !v) return st;
  if (scalar_fill > 0 && cJSON_IsNumber(v)) {
    int64_t x;
    if ((st = int_value(o, key, v, lo, hi, &x)) != DAMO_OK) return st;
    for (int i = 0; i < scalar_fill; i++) out[i] = x;
    *n = scalar_fill;
    return DAMO_OK;
  }
  char entries[200], entry[240];
  if (hi == INT64_MAX) snprintf(entries, sizeof entries, "integers >= %lld", (long long)lo);
  else snprintf(entries, sizeof entries, "integers in [%lld, %lld]", (long long)lo, (long long)hi);
  snprintf(entry, sizeof entry, "an integer%s", entries + 8);
  if ((st = list_value(o, key, min_n, max_n, flags, entries, &v)) != DAMO_OK) return st;
  int i = 0;
  for (const cJSON *it = v->child; it; it = it->next, i++) {
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || !(it->valuedouble >= (double)lo) ||
        !(it->valuedouble <= (double)hi)) {
      char got[100];
      describe(it, got, sizeof got);
      return entry_fail(o, key, i, "must be %s, got %s", entry, got);
    }
    out[i] = (int64_t)it->valuedouble;
  }
  *n = i;
  return DAMO_OK;
}

damo_status damo_config_get_doubles(damo_config_obj *o, const char *key, int min_n, int max_n, double lo, double hi,
                                    unsigned flags, double *out, int *n) {
  char range[160], entries[200], entry[200];
  range_text(lo, hi, flags, range, sizeof range);
  const int any = isinf(lo) && isinf(hi);
  snprintf(entries, sizeof entries, "%snumbers%s%s", any ? "finite " : "", any ? "" : " ", any ? "" : range);
  snprintf(entry, sizeof entry, "a %snumber%s%s", any ? "finite " : "", any ? "" : " ", any ? "" : range);
  const cJSON *v;
  damo_status st = list_value(o, key, min_n, max_n, flags, entries, &v);
  if (st != DAMO_OK || !v) return st;
  int i = 0;
  for (const cJSON *it = v->child; it; it = it->next, i++) {
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || !in_range(it->valuedouble, lo, hi, flags)) {
      char got[100];
      describe(it, got, sizeof got);
      return entry_fail(o, key, i, "must be %s, got %s", entry, got);
    }
    out[i] = it->valuedouble;
  }
  *n = i;
  return DAMO_OK;
}

/* The view of an object value: its path below o, and a label below o's label. */
static damo_status child(damo_config_obj *o, const cJSON *json, const char *key, int index, damo_config_obj **out) {
  char path[600], label[600];
  if (index < 0) snprintf(path, sizeof path, "%s%s\"%.100s\"", o->path, o->path[0] ? "." : "", key);
  else snprintf(path, sizeof path, "%s%s\"%.100s\"[%d]", o->path, o->path[0] ? "." : "", key, index);
  if (o->label && index < 0) snprintf(label, sizeof label, "%s%s%.100s", o->label, o->label[0] ? "." : "", key);
  else if (o->label) snprintf(label, sizeof label, "%s%s%.100s[%d]", o->label, o->label[0] ? "." : "", key, index);
  return object_for(o->doc, json, path, o->label ? label : NULL, out);
}

damo_status damo_config_get_object(damo_config_obj *o, const char *key, unsigned flags, damo_config_obj **out) {
  *out = NULL;
  const cJSON *v;
  damo_status st = value(o, key, flags, &v);
  if (st != DAMO_OK || !v) return st;
  if (!cJSON_IsObject(v)) return bad(o, key, v, "an object");
  return child(o, v, key, -1, out);
}

damo_status damo_config_get_list(damo_config_obj *o, const char *key, int min_n, int max_n, unsigned flags, int *n) {
  const cJSON *v;
  damo_status st = list_value(o, key, min_n, max_n, flags, "entries", &v);
  if (st == DAMO_OK && v) *n = cJSON_GetArraySize(v);
  return st;
}

damo_status damo_config_list_object(damo_config_obj *o, const char *key, int i, damo_config_obj **out) {
  *out = NULL;
  if (!o || !key) return damo_error(DAMO_ERR_INVALID_ARG, "damo_config: NULL object or key");
  const cJSON *v = ask(o, key), *item = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, i) : NULL;
  if (!item) return damo_config_fail(o, key, DAMO_ERR_FORMAT, "has no entry %d", i);
  if (!cJSON_IsObject(item)) {
    char got[100];
    describe(item, got, sizeof got);
    return entry_fail(o, key, i, "must be an object, got %s%s", got, "");
  }
  return child(o, item, key, i, out);
}

/* ------------------------------------------------------------------ model type */

damo_status damo_config_model_type(damo_config *c, char *buf, size_t cap) {
  damo_config_obj *root;
  damo_status st = damo_config_root(c, &root);
  if (st != DAMO_OK) return st;
  const char *type = NULL;
  if ((st = damo_config_get_string(root, "model_type", 0, &type)) != DAMO_OK) return st;
  if (type && strcmp(type, "gpt2") && strcmp(type, "bert"))
    return damo_error(DAMO_ERR_UNSUPPORTED,
                      "%s: model_type \"%.60s\" is not supported (damo trains \"gpt2\" and \"bert\"; a Sequential "
                      "config has no model_type)",
                      c->source, type);
  snprintf(buf, cap, "%s", type ? type : "sequential");
  return DAMO_OK;
}

damo_status damo_config_model_type_file(const char *path, char *buf, size_t cap) {
  damo_config *c;
  damo_status st = damo_config_read_file(path, &c);
  if (st != DAMO_OK) return st;
  st = damo_config_model_type(c, buf, cap);
  damo_config_free(c);
  return st;
}
