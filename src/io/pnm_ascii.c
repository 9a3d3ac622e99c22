/* pnm_ascii.c - the plain (ASCII) Netpbm formats that stb_image does not read: P1 (bitmap,
 * 1 is black), P2 (grey) and P3 (RGB), with '#' comments and any maxval up to 65535, scaled
 * to 0..255. The binary P4-P6 go through stb_image as before. Every sample takes at least a
 * byte of the file, so the header's size is checked against the file before allocating. */
#include "io/pnm_ascii.h"

#include <stdio.h>

typedef struct cursor {
  const char *p, *end;
} cursor;

static void skip_space(cursor *c) {
  while (c->p < c->end) {
    if (*c->p == '#') {
      while (c->p < c->end && *c->p != '\n') c->p++;
    } else if (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r' || *c->p == '\v' || *c->p == '\f') {
      c->p++;
    } else {
      break;
    }
  }
}

/* A decimal number of at most `digits` digits (P1 samples are one digit, maybe unseparated). */
static int read_uint(cursor *c, int digits, long *out) {
  skip_space(c);
  long v = 0;
  int n = 0;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9' && n < digits) {
    v = v * 10 + (*c->p++ - '0');
    if (v > 100000000L) return 0;
    n++;
  }
  *out = v;
  return n > 0;
}

int damo_pnm_is_ascii(const unsigned char *data, size_t size) {
  return size >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '3';
}

damo_status damo_pnm_ascii_decode(const unsigned char *data, size_t size, const char *path, int64_t max_pixels,
                                  unsigned char **out, int *w, int *h, int *channels) {
  *out = NULL;
  cursor c = {(const char *)data + 2, (const char *)data + size};
  const int kind = data[1] - '0', ch = kind == 3 ? 3 : 1;
  long width, height, maxval = 1;
  if (!read_uint(&c, 9, &width) || !read_uint(&c, 9, &height) || (kind != 1 && !read_uint(&c, 9, &maxval)))
    return damo_error(DAMO_ERR_FORMAT, "%s: P%d header: expected width, height%s as decimal numbers", path, kind,
                      kind == 1 ? "" : " and maxval");
  if (width < 1 || height < 1 || width * height > max_pixels || maxval < 1 || maxval > 65535)
    return damo_error(DAMO_ERR_FORMAT, "%s: P%d header %ld x %ld, maxval %ld: expected sides >= 1, at most %lld pixels and "
                      "maxval 1..65535", path, kind, width, height, maxval, (long long)max_pixels);
  const int64_t samples = (int64_t)width * height * ch;
  if (samples > (int64_t)size)
    return damo_error(DAMO_ERR_FORMAT, "%s: the P%d header declares %lld samples but the file has %zu bytes (truncated)",
                      path, kind, (long long)samples, size);
  unsigned char *px = malloc((size_t)samples);
  if (!px) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory for %lld samples", path, (long long)samples);
  for (int64_t i = 0; i < samples; i++) {
    long v;
    if (!read_uint(&c, kind == 1 ? 1 : 9, &v) || v > maxval) {
      long offset = (long)(c.p - (const char *)data);
      free(px);
      return damo_error(DAMO_ERR_FORMAT, "%s: byte %ld: sample %lld of %lld is missing or above maxval %ld", path, offset,
                        (long long)i + 1, (long long)samples, maxval);
    }
    px[i] = kind == 1 ? (unsigned char)(v ? 0 : 255) : (unsigned char)((v * 255 + maxval / 2) / maxval);
  }
  *out = px;
  *w = (int)width;
  *h = (int)height;
  *channels = ch;
  return DAMO_OK;
}
