/* npy.c - reading and writing NumPy .npy files, the simplest way to move arrays between
 * damo and Python. Loading accepts format versions 1.0/2.0/3.0, C order, either byte order
 * (big-endian data is byte-swapped), and the dtypes f2/f4/f8, i1..i8, u1..u8 and b1; floats
 * become F32, u1 stays U8 and every other integer (and bool) becomes I32, failing on values
 * that do not fit. The header dict is parsed as the small Python literal it is, and the file
 * must hold exactly shape x itemsize bytes after it. Saving writes version 1.0 with <f4, <i4
 * or |u1 through damo_write_file_atomic. */
#include "core/core.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

static int host_is_big_endian(void) {
  uint16_t one = 1;
  unsigned char first;
  memcpy(&first, &one, 1);
  return first == 0;
}

/* ------------------------------------------------------------------ header parsing */

typedef struct npy_header {
  char order;     /* '<', '>', '=' or '|' as written */
  char kind;      /* 'f', 'i', 'u' or 'b' */
  int size;       /* item size in bytes */
  char descr[32]; /* as written, for messages */
  int fortran;
  int ndim;
  int64_t shape[DAMO_MAX_DIMS];
} npy_header;

typedef struct cursor {
  const char *p, *end;
  const char *path;
} cursor;

static void skip_ws(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* What the cursor points at, quoted for a message ("end of header" past the end). */
static const char *found_here(const cursor *c, char *buf, size_t cap) {
  if (c->p >= c->end) return "the end of the header";
  size_t n = (size_t)(c->end - c->p);
  if (n > 12) n = 12;
  snprintf(buf, cap, "'%.*s'", (int)n, c->p);
  return buf;
}

static damo_status expect_char(cursor *c, char ch, const char *what) {
  skip_ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return DAMO_OK;
  }
  char buf[32];
  return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: expected '%c' %s, found %s", c->path, ch, what,
                    found_here(c, buf, sizeof buf));
}

/* A Python string literal in single or double quotes (no escapes: numpy never writes any). */
static damo_status parse_string(cursor *c, char *out, size_t cap, const char *what) {
  skip_ws(c);
  char buf[32];
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
    return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: expected a quoted string for %s, found %s", c->path, what,
                      found_here(c, buf, sizeof buf));
  char q = *c->p++;
  const char *start = c->p;
  while (c->p < c->end && *c->p != q) c->p++;
  if (c->p >= c->end)
    return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: unterminated string for %s", c->path, what);
  size_t n = (size_t)(c->p - start);
  c->p++;
  if (n >= cap)
    return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: %s '%.*s' is too long", c->path, what, (int)(n > 40 ? 40 : n),
                      start);
  memcpy(out, start, n);
  out[n] = '\0';
  return DAMO_OK;
}

static damo_status parse_descr(cursor *c, npy_header *h) {
  skip_ws(c);
  if (c->p < c->end && *c->p == '[')
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: structured (record) dtypes are not supported; expected a plain "
                      "numeric dtype such as '<f4'", c->path);
  damo_status s = parse_string(c, h->descr, sizeof h->descr, "'descr'");
  if (s) return s;
  const char *d = h->descr;
  h->order = '|';
  if (*d == '<' || *d == '>' || *d == '=' || *d == '|') h->order = *d++;
  h->kind = *d ? *d++ : 0;
  char *endp;
  errno = 0;
  long size = strtol(d, &endp, 10);
  if (!*d || *endp || errno || size <= 0)
    return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: cannot read dtype '%s' (expected e.g. '<f4')", c->path,
                      h->descr);
  h->size = (int)size;
  int ok = (h->kind == 'f' && (size == 2 || size == 4 || size == 8)) ||
           ((h->kind == 'i' || h->kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
           (h->kind == 'b' && size == 1);
  if (!ok)
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: dtype '%s' is not supported (expected f2/f4/f8, i1-i8, u1-u8 or b1)",
                      c->path, h->descr);
  if (h->order == '|' && size > 1)
    return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: dtype '%s' has no byte order but items of %ld bytes",
                      c->path, h->descr, size);
  return DAMO_OK;
}

static damo_status parse_bool(cursor *c, int *out) {
  skip_ws(c);
  size_t left = (size_t)(c->end - c->p);
  if (left >= 4 && memcmp(c->p, "True", 4) == 0) {
    c->p += 4;
    *out = 1;
    return DAMO_OK;
  }
  if (left >= 5 && memcmp(c->p, "False", 5) == 0) {
    c->p += 5;
    *out = 0;
    return DAMO_OK;
  }
  char buf[32];
  return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: expected True or False for 'fortran_order', found %s", c->path,
                    found_here(c, buf, sizeof buf));
}

/* A tuple of non-negative integers: "()", "(5,)", "(2, 3)"; Python 2 files may add 'L'. */
static damo_status parse_shape(cursor *c, npy_header *h) {
  damo_status s = expect_char(c, '(', "to open 'shape'");
  if (s) return s;
  h->ndim = 0;
  for (;;) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ')') {
      c->p++;
      return DAMO_OK;
    }
    char buf[32];
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
      return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: expected a non-negative integer in 'shape', found %s",
                        c->path, found_here(c, buf, sizeof buf));
    int64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
      if (v > (INT64_MAX - 9) / 10)
        return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: a dimension in 'shape' overflows", c->path);
      v = v * 10 + (*c->p++ - '0');
    }
    if (c->p < c->end && (*c->p == 'L' || *c->p == 'l')) c->p++;
    if (h->ndim == DAMO_MAX_DIMS)
      return damo_error(DAMO_ERR_UNSUPPORTED, "%s: arrays of more than %d dimensions are not supported", c->path,
                        DAMO_MAX_DIMS);
    h->shape[h->ndim++] = v;
    skip_ws(c);
    if (c->p < c->end && *c->p == ',') {
      c->p++;
      continue;
    }
    if (c->p < c->end && *c->p == ')') continue;
    return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: expected ',' or ')' in 'shape', found %s", c->path,
                      found_here(c, buf, sizeof buf));
  }
}

static damo_status parse_header(const char *text, size_t len, const char *path, npy_header *h) {
  cursor c = {text, text + len, path};
  int seen_descr = 0, seen_fortran = 0, seen_shape = 0;
  damo_status s = expect_char(&c, '{', "at the start of the header dict");
  if (s) return s;
  for (;;) {
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}') {
      c.p++;
      break;
    }
    char key[32];
    if ((s = parse_string(&c, key, sizeof key, "a key"))) return s;
    if ((s = expect_char(&c, ':', "after a key"))) return s;
    int *seen;
    if (strcmp(key, "descr") == 0) {
      seen = &seen_descr;
      s = parse_descr(&c, h);
    } else if (strcmp(key, "fortran_order") == 0) {
      seen = &seen_fortran;
      s = parse_bool(&c, &h->fortran);
    } else if (strcmp(key, "shape") == 0) {
      seen = &seen_shape;
      s = parse_shape(&c, h);
    } else {
      return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: unexpected key '%s' (expected descr, fortran_order, shape)",
                        path, key);
    }
    if (s) return s;
    if (*seen) return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: key '%s' appears twice", path, key);
    *seen = 1;
    skip_ws(&c);
    if (c.p < c.end && *c.p == ',') {
      c.p++;
      continue;
    }
    if ((s = expect_char(&c, '}', "or ',' after a value"))) return s;
    break;
  }
  skip_ws(&c);
  if (c.p != c.end) {
    char buf[32];
    return damo_error(DAMO_ERR_FORMAT, "%s: .npy header: unexpected %s after the dict", path,
                      found_here(&c, buf, sizeof buf));
  }
  if (!seen_descr || !seen_fortran || !seen_shape)
    return damo_error(DAMO_ERR_FORMAT, "%s: .npy header lacks '%s'", path,
                      !seen_descr ? "descr" : !seen_fortran ? "fortran_order" : "shape");
  if (h->fortran)
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: fortran_order True (column-major) arrays are not supported; save "
                      "with np.ascontiguousarray first", path);
  return DAMO_OK;
}

/* ------------------------------------------------------------------ element conversion */

static uint64_t load_uint(const unsigned char *p, int size, int big) {
  uint64_t v = 0;
  for (int i = 0; i < size; i++) v |= (uint64_t)p[big ? size - 1 - i : i] << (8 * i);
  return v;
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13); /* inf / NaN */
  } else if (exp == 0) {
    float f = ldexpf((float)man, -24); /* zero or subnormal */
    return sign ? -f : f;
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static void byteswap_inplace(unsigned char *p, size_t count, int size) {
  for (size_t i = 0; i < count; i++, p += size)
    for (int a = 0, b = size - 1; a < b; a++, b--) {
      unsigned char t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
}

/* Converts count raw items (starting at element index first) into dst of dtype out. */
static damo_status convert_items(const npy_header *h, int big, const unsigned char *src, size_t count, int64_t first,
                                 void *dst, const char *path) {
  for (size_t i = 0; i < count; i++) {
    uint64_t u = load_uint(src + i * (size_t)h->size, h->size, big);
    if (h->kind == 'f') {
      float f;
      if (h->size == 2) {
        f = half_to_float((uint16_t)u);
      } else if (h->size == 4) {
        uint32_t b = (uint32_t)u;
        memcpy(&f, &b, 4);
      } else {
        double d;
        memcpy(&d, &u, 8);
        if (isfinite(d) && fabs(d) > FLT_MAX)
          return damo_error(DAMO_ERR_UNSUPPORTED, "%s: value %g at index %lld does not fit in f32", path, d,
                            (long long)(first + (int64_t)i));
        f = (float)d;
      }
      ((float *)dst)[i] = f;
      continue;
    }
    int64_t v;
    if (h->kind == 'b') {
      v = u != 0;
    } else if (h->kind == 'u') {
      if (u > INT32_MAX)
        return damo_error(DAMO_ERR_UNSUPPORTED, "%s: value %llu at index %lld does not fit in i32", path,
                          (unsigned long long)u, (long long)(first + (int64_t)i));
      v = (int64_t)u;
    } else {
      int bits = 8 * h->size;
      uint64_t mask = bits == 64 ? ~(uint64_t)0 : (((uint64_t)1 << bits) - 1);
      /* Sign-extend without relying on implementation-defined conversions. */
      v = (u >> (bits - 1)) & 1 ? -(int64_t)(~u & mask) - 1 : (int64_t)u;
    }
    if (v < INT32_MIN || v > INT32_MAX)
      return damo_error(DAMO_ERR_UNSUPPORTED, "%s: value %lld at index %lld does not fit in i32", path, (long long)v,
                        (long long)(first + (int64_t)i));
    ((int32_t *)dst)[i] = (int32_t)v;
  }
  return DAMO_OK;
}

/* ------------------------------------------------------------------ load */

static damo_status read_exact(FILE *f, void *buf, size_t n, const char *path, const char *what, long offset) {
  size_t got = fread(buf, 1, n, f);
  if (got == n) return DAMO_OK;
  if (ferror(f)) return damo_error(DAMO_ERR_IO, "%s: read error in the %s: %s", path, what, strerror(errno));
  return damo_error(DAMO_ERR_FORMAT, "%s: truncated: the %s needs %zu bytes at offset %ld but only %zu remain", path,
                    what, n, offset, got);
}

static damo_status npy_load_file(FILE *f, const char *path, damo_tensor **out) {
  unsigned char pre[12];
  struct stat st;
  if (fstat(fileno(f), &st) != 0) return damo_error(DAMO_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
  if (st.st_size < 10)
    return damo_error(DAMO_ERR_FORMAT, "%s: not an .npy file: %lld bytes is too short for the 10-byte preamble", path,
                      (long long)st.st_size);
  damo_status s = read_exact(f, pre, 10, path, "preamble", 0);
  if (s) return s;
  if (memcmp(pre, npy_magic, 6) != 0)
    return damo_error(DAMO_ERR_FORMAT, "%s: not an .npy file: expected magic \\x93NUMPY, found bytes %02x %02x %02x %02x "
                      "%02x %02x", path, pre[0], pre[1], pre[2], pre[3], pre[4], pre[5]);
  int major = pre[6], minor = pre[7];
  size_t hlen, pre_len;
  if (major == 1) {
    hlen = (size_t)load_uint(pre + 8, 2, 0);
    pre_len = 10;
  } else if (major == 2 || major == 3) {
    if ((s = read_exact(f, pre + 10, 2, path, "preamble", 10))) return s;
    hlen = (size_t)load_uint(pre + 8, 4, 0);
    pre_len = 12;
  } else {
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: .npy format version %d.%d is not supported (expected 1.0, 2.0 or 3.0)",
                      path, major, minor);
  }
  if ((long long)(pre_len + hlen) > (long long)st.st_size)
    return damo_error(DAMO_ERR_FORMAT, "%s: truncated: the header claims %zu bytes but the file has only %lld after the "
                      "%zu-byte preamble", path, hlen, (long long)st.st_size - (long long)pre_len, pre_len);
  char *text = malloc(hlen + 1);
  if (!text) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for a %zu-byte header", path, hlen);
  if ((s = read_exact(f, text, hlen, path, "header", (long)pre_len))) {
    free(text);
    return s;
  }
  text[hlen] = '\0';
  npy_header h;
  memset(&h, 0, sizeof h);
  s = parse_header(text, hlen, path, &h);
  free(text);
  if (s) return s;

  size_t numel = 1, expected;
  for (int i = 0; i < h.ndim; i++)
    if (damo_mul_overflow(numel, (size_t)h.shape[i], &numel))
      return damo_error(DAMO_ERR_FORMAT, "%s: shape overflows the address space", path);
  if (damo_mul_overflow(numel, (size_t)h.size, &expected))
    return damo_error(DAMO_ERR_FORMAT, "%s: shape overflows the address space", path);
  long long actual = (long long)st.st_size - (long long)(pre_len + hlen);
  if (actual != (long long)expected) {
    char sh[128];
    damo_shape_string(h.ndim, h.shape, sh, sizeof sh);
    return damo_error(DAMO_ERR_FORMAT, "%s: %s: shape %s of '%s' needs %zu bytes of data but the file holds %lld",
                      path, actual < (long long)expected ? "truncated" : "trailing data", sh, h.descr, expected, actual);
  }

  damo_dtype dt = h.kind == 'f' ? DAMO_F32 : (h.kind == 'u' && h.size == 1) ? DAMO_U8 : DAMO_I32;
  damo_tensor *t = damo_tensor_new(dt, h.ndim, h.shape);
  if (!t) return damo_error_prefix(DAMO_ERR_NOMEM, "%s: ", path);
  int big = h.order == '>' || (h.order == '=' && host_is_big_endian());
  int direct = (h.kind == 'f' && h.size == 4) || (h.kind == 'i' && h.size == 4) || (h.kind == 'u' && h.size == 1);
  if (direct) {
    /* Same width and kind: read straight into the tensor, swapping if the orders differ. */
    s = read_exact(f, t->data, expected, path, "data", (long)(pre_len + hlen));
    if (!s && h.size > 1 && big != host_is_big_endian()) byteswap_inplace(t->data, numel, h.size);
  } else {
    enum { CHUNK = 1 << 16 };
    unsigned char *buf = malloc((size_t)CHUNK * (size_t)h.size);
    if (!buf) s = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
    for (size_t done = 0; !s && done < numel;) {
      size_t n = numel - done < CHUNK ? numel - done : CHUNK;
      s = read_exact(f, buf, n * (size_t)h.size, path, "data", (long)(pre_len + hlen + done * (size_t)h.size));
      if (!s) s = convert_items(&h, big, buf, n, (int64_t)done, (char *)t->data + done * 4, path);
      done += n;
    }
    free(buf);
  }
  if (s) {
    damo_tensor_free(t);
    return s;
  }
  *out = t;
  return DAMO_OK;
}

damo_status damo_npy_load(const char *path, damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "npy_load: NULL output");
  *out = NULL;
  if (!path) return damo_error(DAMO_ERR_INVALID_ARG, "npy_load: NULL path");
  FILE *f = fopen(path, "rb");
  if (!f) return damo_error(errno == ENOENT ? DAMO_ERR_NOT_FOUND : DAMO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  damo_status s = npy_load_file(f, path, out);
  fclose(f);
  return s;
}

/* ------------------------------------------------------------------ save */

damo_status damo_npy_save(const char *path, const damo_tensor *t) {
  if (!path || !t) return damo_error(DAMO_ERR_INVALID_ARG, "npy_save: NULL %s", path ? "tensor" : "path");
  const char *descr = t->dtype == DAMO_F32 ? "<f4" : t->dtype == DAMO_I32 ? "<i4" : t->dtype == DAMO_U8 ? "|u1" : NULL;
  if (!descr) return damo_error(DAMO_ERR_INVALID_ARG, "%s: cannot save a tensor of unknown dtype %d", path, (int)t->dtype);
  if (t->ndim < 0 || t->ndim > DAMO_MAX_DIMS)
    return damo_error(DAMO_ERR_SHAPE, "%s: cannot save a tensor of rank %d", path, t->ndim);

  char shape[DAMO_MAX_DIMS * 24 + 4];
  size_t used = 0;
  for (int i = 0; i < t->ndim; i++)
    used += (size_t)snprintf(shape + used, sizeof shape - used, i ? ", %lld" : "%lld", (long long)t->shape[i]);
  if (t->ndim == 1) snprintf(shape + used, sizeof shape - used, ",");
  if (t->ndim == 0) shape[0] = '\0';

  char dict[256];
  int dlen = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape);
  /* Preamble + dict + padding + '\n' is a multiple of 64 so the data is aligned (as numpy does). */
  size_t hlen = (size_t)dlen + 1;
  hlen += (64 - (10 + hlen) % 64) % 64;
  size_t nbytes = damo_tensor_nbytes(t), total = 10 + hlen + nbytes;
  unsigned char *buf = malloc(total);
  if (!buf) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %zu bytes", path, total);
  memcpy(buf, npy_magic, 6);
  buf[6] = 1;
  buf[7] = 0;
  buf[8] = (unsigned char)(hlen & 0xff);
  buf[9] = (unsigned char)(hlen >> 8);
  memcpy(buf + 10, dict, (size_t)dlen);
  memset(buf + 10 + dlen, ' ', hlen - (size_t)dlen - 1);
  buf[10 + hlen - 1] = '\n';
  if (nbytes) memcpy(buf + 10 + hlen, t->data, nbytes);
  if (host_is_big_endian() && damo_dtype_size(t->dtype) > 1)
    byteswap_inplace(buf + 10 + hlen, nbytes / 4, 4);
  damo_status s = damo_write_file_atomic(path, buf, total);
  free(buf);
  return s;
}
