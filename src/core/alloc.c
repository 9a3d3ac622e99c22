/* alloc.c - checked, aligned allocation and whole-file reads. Buffers are 64-byte aligned
 * so SIMD kernels can use aligned loads on tensor storage. */
#define _DEFAULT_SOURCE 1 /* madvise's MADV_HUGEPAGE beside the POSIX the build asks for */
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>

/* Buffers of at least HUGE_ALLOC_MIN bytes (weights, arenas, a model file read whole) start
 * on a 2 MiB boundary and ask for transparent huge pages, which Linux gives only on request
 * where THP is "madvise" (the usual default). Touching a buffer for the first time costs a
 * page fault per 4 KiB page otherwise: on the paravirtualised VM of bench/RESULTS.md 12 us
 * each, and loading GPT-2 124M to generate took 369K of them (2.5x the time huge pages took). */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define HUGE_ALLOC_MIN ((size_t)4 << 20)

void damo_advise_huge_pages(void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
  /* madvise wants a page-aligned start: the whole pages inside the buffer */
  const uintptr_t page = 4096, first = ((uintptr_t)p + page - 1) & ~(page - 1), end = ((uintptr_t)p + bytes) & ~(page - 1);
  if (p && bytes >= HUGE_ALLOC_MIN && end > first) (void)madvise((void *)first, end - first, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

static void *aligned_buffer(size_t rounded) {
  if (rounded >= HUGE_ALLOC_MIN && rounded <= SIZE_MAX - HUGE_PAGE_BYTES) {
    const size_t whole = (rounded + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
    void *p = aligned_alloc(HUGE_PAGE_BYTES, whole);
    damo_advise_huge_pages(p, whole); /* without THP: 4 KiB pages, as before */
    return p;
  }
  return aligned_alloc(64, rounded);
}

void *damo_alloc(size_t bytes) {
  if (bytes == 0) bytes = 64;
  size_t rounded = (bytes + 63) & ~(size_t)63;
  if (rounded < bytes) {
    damo_error(DAMO_ERR_NOMEM, "allocation of %zu bytes overflows", bytes);
    return NULL;
  }
  void *p = aligned_buffer(rounded);
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
  char *buf = aligned_buffer(((size_t)len + 64) & ~(size_t)63); /* len + 1 bytes, whole 64-byte units */
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
