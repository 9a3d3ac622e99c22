/* csv.c - loading numeric tables from CSV files into a feature matrix and (optionally) an
 * integer label vector. Intended for small tabular data sets, so the whole file is read at
 * once. Supported: an optional header line, a label column chosen by header name or "#N"
 * (0-based), any one-character delimiter, blank lines (skipped), CRLF line ends, a UTF-8
 * byte-order mark, and fields wrapped in double quotes (without embedded delimiters).
 * Every field must be a finite number, labels whole numbers in the int32 range; any problem
 * names the file, the 1-based line and 1-based column (and the header name when there is
 * one). */
#include "core/core.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>

typedef struct csv_state {
  const char *path;
  char delim;
  int ncols;          /* fields per line, fixed by the first line */
  int first_line;     /* line that fixed ncols */
  char **names;       /* header names or NULL */
  int label;          /* label column or -1 */
  float *xs;          /* rows x (ncols - has label) */
  int32_t *ys;
  int64_t rows, cap;
} csv_state;

static int is_blank(char c, char delim) { return (c == ' ' || c == '\t') && c != delim; }

/* Trims blanks and one pair of surrounding double quotes from [*s, *e). */
static void trim_field(char **s, char **e, char delim) {
  while (*s < *e && is_blank(**s, delim)) (*s)++;
  while (*e > *s && is_blank((*e)[-1], delim)) (*e)--;
  if (*e - *s >= 2 && **s == '"' && (*e)[-1] == '"') {
    (*s)++;
    (*e)--;
  }
}

static int count_fields(const char *s, const char *e, char delim) {
  int n = 1;
  for (; s < e; s++) n += *s == delim;
  return n;
}

/* " ('name')" for messages when the file has a header. */
static const char *col_label(const csv_state *st, int col, char *buf, size_t cap) {
  if (!st->names) return "";
  snprintf(buf, cap, " ('%.60s')", st->names[col]);
  return buf;
}

/* Parses one field (NUL-terminated in place) as a finite number. */
static damo_status parse_number(const csv_state *st, char *field, int line, int col, double *out) {
  char lb[80];
  if (!*field)
    return damo_error(DAMO_ERR_FORMAT, "%s: line %d, column %d%s: missing value (expected a number)", st->path, line,
                      col + 1, col_label(st, col, lb, sizeof lb));
  char *end;
  errno = 0;
  double v = strtod(field, &end);
  if (end == field || *end)
    return damo_error(DAMO_ERR_FORMAT, "%s: line %d, column %d%s: expected a number, found '%.40s'", st->path, line,
                      col + 1, col_label(st, col, lb, sizeof lb), field);
  if (!isfinite(v) || fabs(v) > FLT_MAX)
    return damo_error(DAMO_ERR_FORMAT, "%s: line %d, column %d%s: expected a finite number%s, found '%.40s'", st->path,
                      line, col + 1, col_label(st, col, lb, sizeof lb), isfinite(v) ? " in float range" : "", field);
  *out = v;
  return DAMO_OK;
}

static damo_status grow(csv_state *st, int features) {
  if (st->rows < st->cap) return DAMO_OK;
  int64_t cap = st->cap ? st->cap * 2 : 256;
  size_t xb;
  if (damo_mul_overflow((size_t)cap, (size_t)(features ? features : 1) * sizeof(float), &xb))
    return damo_error(DAMO_ERR_NOMEM, "%s: too many rows", st->path);
  float *xs = realloc(st->xs, xb);
  if (!xs) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory at row %lld", st->path, (long long)st->rows);
  st->xs = xs;
  if (st->label >= 0) {
    int32_t *ys = realloc(st->ys, (size_t)cap * sizeof *ys);
    if (!ys) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory at row %lld", st->path, (long long)st->rows);
    st->ys = ys;
  }
  st->cap = cap;
  return DAMO_OK;
}

static damo_status parse_row(csv_state *st, char *s, char *e, int line) {
  int n = count_fields(s, e, st->delim);
  if (n != st->ncols)
    return damo_error(DAMO_ERR_FORMAT, "%s: line %d has %d field%s, expected %d (as on line %d)", st->path, line, n,
                      n == 1 ? "" : "s", st->ncols, st->first_line);
  int features = st->ncols - (st->label >= 0);
  damo_status rc = grow(st, features);
  if (rc) return rc;
  float *xrow = st->xs + st->rows * features;
  int fi = 0;
  char *p = s;
  for (int col = 0; col < st->ncols; col++) {
    char *fs = p;
    while (p < e && *p != st->delim) p++;
    char *fe = p, saved;
    p++; /* past the delimiter (or the line end on the last field) */
    trim_field(&fs, &fe, st->delim);
    saved = *fe;
    *fe = '\0';
    double v = 0;
    rc = parse_number(st, fs, line, col, &v);
    if (!rc && col == st->label && (v != floor(v) || v < INT32_MIN || v > INT32_MAX)) {
      char lb[80];
      rc = damo_error(DAMO_ERR_FORMAT, "%s: line %d, column %d%s: expected an integer label, found '%.40s'", st->path,
                      line, col + 1, col_label(st, col, lb, sizeof lb), fs);
    }
    *fe = saved;
    if (rc) return rc;
    if (col == st->label)
      st->ys[st->rows] = (int32_t)v;
    else
      xrow[fi++] = (float)v;
  }
  st->rows++;
  return DAMO_OK;
}

static damo_status read_header(csv_state *st, char *s, char *e) {
  st->names = calloc((size_t)st->ncols, sizeof *st->names);
  if (!st->names) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", st->path);
  char *p = s;
  for (int col = 0; col < st->ncols; col++) {
    char *fs = p;
    while (p < e && *p != st->delim) p++;
    char *fe = p;
    p++;
    trim_field(&fs, &fe, st->delim);
    st->names[col] = malloc((size_t)(fe - fs) + 1);
    if (!st->names[col]) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", st->path);
    memcpy(st->names[col], fs, (size_t)(fe - fs));
    st->names[col][fe - fs] = '\0';
  }
  return DAMO_OK;
}

static damo_status resolve_label(csv_state *st, const char *want) {
  st->label = -1;
  if (!want) return DAMO_OK;
  if (want[0] == '#') {
    char *end;
    errno = 0;
    long n = strtol(want + 1, &end, 10);
    if (!want[1] || *end || errno || n < 0)
      return damo_error(DAMO_ERR_INVALID_ARG, "%s: label column '%s' is not \"#N\" with N a 0-based column number",
                        st->path, want);
    if (n >= st->ncols)
      return damo_error(DAMO_ERR_NOT_FOUND, "%s: label column %s is out of range: lines have %d columns (#0..#%d)",
                        st->path, want, st->ncols, st->ncols - 1);
    st->label = (int)n;
    return DAMO_OK;
  }
  if (!st->names)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: label column '%s' given by name but the file has no header (use "
                      "has_header or \"#N\")", st->path, want);
  for (int c = 0; c < st->ncols; c++)
    if (strcmp(st->names[c], want) == 0) {
      st->label = c;
      return DAMO_OK;
    }
  char list[512];
  size_t used = 0;
  list[0] = '\0';
  for (int c = 0; c < st->ncols && used < sizeof list; c++)
    used += (size_t)snprintf(list + used, sizeof list - used, c ? ", %s" : "%s", st->names[c]);
  return damo_error(DAMO_ERR_NOT_FOUND, "%s: no column named '%s' in the header (columns: %s)", st->path, want, list);
}

static damo_status parse_text(csv_state *st, char *text, size_t size, const damo_csv_options *opt) {
  char *p = text, *end = text + size;
  if (size >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF) p += 3;
  int line = 0, have_layout = 0;
  damo_status rc = DAMO_OK;
  while (p < end && !rc) {
    char *s = p, *e = memchr(p, '\n', (size_t)(end - p));
    if (!e) e = end;
    p = e + 1;
    line++;
    if (e > s && e[-1] == '\r') e--;
    char *q = s;
    while (q < e && (*q == ' ' || *q == '\t')) q++;
    if (q == e) continue; /* blank line */
    if (!have_layout) {
      have_layout = 1;
      st->ncols = count_fields(s, e, st->delim);
      st->first_line = line;
      if (opt->has_header) {
        if ((rc = read_header(st, s, e))) break;
        rc = resolve_label(st, opt->label_column);
        if (!rc && st->ncols - (st->label >= 0) == 0)
          rc = damo_error(DAMO_ERR_FORMAT, "%s: line %d: no feature columns besides the label", st->path, line);
        continue;
      }
      rc = resolve_label(st, opt->label_column);
      if (!rc && st->ncols - (st->label >= 0) == 0)
        rc = damo_error(DAMO_ERR_FORMAT, "%s: line %d: no feature columns besides the label", st->path, line);
      if (rc) break;
    }
    rc = parse_row(st, s, e, line);
  }
  if (!rc && !have_layout) rc = damo_error(DAMO_ERR_FORMAT, "%s: the file is empty (expected CSV rows)", st->path);
  if (!rc && st->rows == 0) rc = damo_error(DAMO_ERR_FORMAT, "%s: no data rows after the header", st->path);
  return rc;
}

damo_status damo_csv_load(const char *path, const damo_csv_options *opt, damo_tensor **x, damo_tensor **y) {
  if (!x) return damo_error(DAMO_ERR_INVALID_ARG, "csv_load: NULL x");
  *x = NULL;
  if (y) *y = NULL;
  if (!path) return damo_error(DAMO_ERR_INVALID_ARG, "csv_load: NULL path");
  damo_csv_options defaults = {0, NULL, ','};
  if (!opt) opt = &defaults;
  if (opt->label_column && !y)
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: a label column was named but y is NULL", path);
  char delim = opt->delimiter ? opt->delimiter : ',';
  if (delim == '\n' || delim == '\r' || delim == '"')
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: delimiter 0x%02x cannot be used", path, (unsigned char)delim);

  char *text;
  size_t size;
  damo_status rc = damo_read_file(path, &text, &size);
  if (rc) return rc;
  csv_state st = {0};
  st.path = path;
  st.delim = delim;
  st.label = -1;
  rc = parse_text(&st, text, size, opt);
  free(text);

  damo_tensor *tx = NULL, *ty = NULL;
  if (!rc) {
    int features = st.ncols - (st.label >= 0);
    int64_t xs[2] = {st.rows, features};
    tx = damo_tensor_new(DAMO_F32, 2, xs);
    if (tx && st.label >= 0) ty = damo_tensor_new(DAMO_I32, 1, xs);
    if (!tx || (st.label >= 0 && !ty)) {
      rc = damo_error_prefix(DAMO_ERR_NOMEM, "%s: ", path);
    } else {
      memcpy(tx->data, st.xs, (size_t)st.rows * (size_t)features * sizeof(float));
      if (ty) memcpy(ty->data, st.ys, (size_t)st.rows * sizeof(int32_t));
    }
  }
  if (st.names)
    for (int c = 0; c < st.ncols; c++) free(st.names[c]);
  free(st.names);
  free(st.xs);
  free(st.ys);
  if (rc) {
    damo_tensor_free(tx);
    damo_tensor_free(ty);
    return rc;
  }
  *x = tx;
  if (y) *y = ty;
  return DAMO_OK;
}
