/* alloc.c - checked, aligned allocation and whole-file reads. Buffers are 64-byte aligned
 * so SIMD kernels can use aligned loads on tensor storage. */
#include "core/core.h"

#include <errno.h>
#include <stdio.h>

void *damo_alloc(size_t bytes) {
  if (bytes == 0) bytes = 64;
  size_t rounded = (bytes + 63) & ~(size_t)63;
  if (rounded < bytes) {
    damo_error(DAMO_ERR_NOMEM, "allocation of %zu bytes overflows", bytes);
    return NULL;
  }
  void *p = aligned_alloc(64, rounded);
  if (!p) damo_error(DAMO_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
  return p;
}

void *damo_calloc(size_t bytes) {
  void *p = damo_alloc(bytes);
  if (p) memset(p, 0, bytes ? bytes : 64);
  return p;
}

void damo_free(void *p) { free(p); }

char *damo_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (!d) {
    damo_error(DAMO_ERR_NOMEM, "out of memory copying a %zu-byte string", n);
    return NULL;
  }
  memcpy(d, s, n);
  return d;
}

damo_status damo_read_file(const char *path, char **data, size_t *size) {
  *data = NULL;
  if (size) *size = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return damo_error(errno == ENOENT ? DAMO_ERR_NOT_FOUND : DAMO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    return damo_error(DAMO_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
  }
  long len = ftell(f);
  if (len < 0) {
    fclose(f);
    return damo_error(DAMO_ERR_IO, "%s: cannot tell size: %s", path, strerror(errno));
  }
  rewind(f);
  char *buf = malloc((size_t)len + 1);
  if (!buf) {
    fclose(f);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory reading %ld bytes", path, len);
  }
  size_t got = fread(buf, 1, (size_t)len, f);
  int err = ferror(f);
  fclose(f);
  if (got != (size_t)len || err) {
    free(buf);
    return damo_error(DAMO_ERR_IO, "%s: short read (%zu of %ld bytes)", path, got, len);
  }
  buf[len] = '\0';
  *data = buf;
  if (size) *size = (size_t)len;
  return DAMO_OK;
}
