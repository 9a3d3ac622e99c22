/* idx.c - reading IDX files, the format of MNIST and Fashion-MNIST. A file is two zero
 * bytes, a type byte (0x08 = unsigned byte, the only type those data sets use), a rank
 * byte, one big-endian uint32 per dimension, then the data in C order. Files are read
 * through zlib's gzread, which decompresses .gz files and passes plain files through, so
 * both kinds load the same way. Everything is checked: the magic, the sizes, that the data
 * is all there (a short file names the byte offset where it ran out), that the gzip stream
 * is intact (including its CRC, which zlib checks at the end of the stream) and that
 * nothing follows the data.
 *
 * Nothing is allocated from the header's shape alone: a plain file's length is checked
 * against it first, and a gzip stream (whose length is unknown until it ends) is read in
 * chunks into a buffer that grows with the data that actually arrives, so a 20-byte file
 * claiming gigabytes fails at its first missing byte having allocated at most one chunk. */
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <zlib.h>

/* The first buffer for gzip data; it doubles as data arrives, up to the declared size. */
#define IDX_FIRST_CHUNK ((size_t)1 << 20)

/* More elements than any IDX data set has by far; guards against a corrupt size field
 * asking for an absurd allocation. */
#define IDX_MAX_ELEMENTS ((uint64_t)1 << 34)

/* The reason a gzread came up short: zlib's message if the stream is corrupt, else a
 * plain end of file. Returns 0 for end of file, 1 (and fills buf) for a zlib error, 2 for
 * an operating-system read error. */
static int gz_failure(gzFile gz, const char *path, char *buf, size_t cap, int *code) {
  *code = Z_OK;
  const char *msg = gzerror(gz, code);
  if (*code == Z_OK || *code == Z_STREAM_END) return 0;
  if (*code == Z_ERRNO) {
    snprintf(buf, cap, "%s", strerror(errno));
    return 2;
  }
  if (!msg || !*msg) msg = "unknown zlib error";
  /* zlib prefixes the path; our messages already start with it. */
  size_t pl = strlen(path);
  if (strncmp(msg, path, pl) == 0 && msg[pl] == ':' && msg[pl + 1] == ' ') msg += pl + 2;
  snprintf(buf, cap, "%s", msg);
  return 1;
}

/* Reads exactly n bytes; *got says how many arrived. */
static int gz_read_all(gzFile gz, void *dst, size_t n, size_t *got) {
  *got = 0;
  while (*got < n) {
    size_t left = n - *got;
    unsigned chunk = left > (1u << 30) ? (1u << 30) : (unsigned)left;
    int r = gzread(gz, (char *)dst + *got, chunk);
    if (r <= 0) return r < 0 ? -1 : 0;
    *got += (size_t)r;
  }
  return 1;
}

static const char *idx_type_name(int type) {
  switch (type) {
  case 0x09: return "signed byte";
  case 0x0B: return "int16";
  case 0x0C: return "int32";
  case 0x0D: return "float32";
  case 0x0E: return "float64";
  }
  return NULL;
}

/* Describes a short read at offset (decompressed bytes) of the part named what. */
static damo_status short_read(gzFile gz, const char *path, const char *what, size_t offset, size_t need, size_t got) {
  char zmsg[256];
  int code, why = gz_failure(gz, path, zmsg, sizeof zmsg, &code);
  if (why == 2) return damo_error(DAMO_ERR_IO, "%s: read error in the %s: %s", path, what, zmsg);
  /* zlib decompresses ahead, so a corrupt stream has no meaningful offset; a stream that
   * simply ends does: everything before it was delivered. */
  if (why == 1 && code != Z_BUF_ERROR)
    return damo_error(DAMO_ERR_FORMAT, "%s: corrupt gzip data (found while reading the %s): %s", path, what, zmsg);
  return damo_error(DAMO_ERR_FORMAT, "%s: truncated%s: the %s needs %zu bytes from byte offset %zu but the data ran "
                    "out at byte offset %zu", path, why ? " gzip stream" : "", what, need, offset, offset + got);
}

/* The numel data bytes after the header (at byte data_off) into *out (damo_alloc'd, exactly
 * numel bytes), checking that they exist before allocating them all: a plain file must be
 * long enough; a gzip stream is read a chunk at a time, the buffer growing only with data
 * that arrived, and a short stream fails at its first missing byte. */
static damo_status read_data(gzFile gz, const char *path, int ndim, const int64_t *shape, size_t data_off, size_t numel,
                             unsigned char **out) {
  char sh[128], what[192];
  damo_shape_string(ndim, shape, sh, sizeof sh);
  snprintf(what, sizeof what, "data of shape %s", sh);
  size_t cap = numel;
  struct stat sb;
  if (gzdirect(gz) && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
    if ((uint64_t)sb.st_size < (uint64_t)data_off + numel)
      return damo_error(DAMO_ERR_FORMAT, "%s: truncated: the %s needs %zu bytes from byte offset %zu but the file ends "
                        "at byte offset %lld", path, what, numel, data_off, (long long)sb.st_size);
  } else if (cap > IDX_FIRST_CHUNK) {
    cap = IDX_FIRST_CHUNK; /* gzip (or not a regular file): the length is known only at the end */
  }
  unsigned char *buf = damo_alloc(cap);
  if (!buf) return damo_error_prefix(DAMO_ERR_NOMEM, "%s: ", path);
  size_t have = 0;
  while (have < numel) {
    if (have == cap) {
      size_t grown = cap > numel / 2 ? numel : 2 * cap;
      unsigned char *bigger = damo_alloc(grown);
      if (!bigger) {
        damo_free(buf);
        return damo_error_prefix(DAMO_ERR_NOMEM, "%s: ", path);
      }
      memcpy(bigger, buf, have);
      damo_free(buf);
      buf = bigger, cap = grown;
    }
    size_t got;
    int r = gz_read_all(gz, buf + have, cap - have, &got);
    have += got;
    if (r != 1) {
      damo_free(buf);
      return short_read(gz, path, what, data_off, numel, have);
    }
  }
  *out = buf;
  return DAMO_OK;
}

static damo_status idx_read(gzFile gz, const char *path, damo_tensor **out) {
  unsigned char head[4];
  size_t got;
  if (gz_read_all(gz, head, 4, &got) != 1) return short_read(gz, path, "4-byte IDX magic", 0, 4, got);
  if (head[0] != 0 || head[1] != 0)
    return damo_error(DAMO_ERR_FORMAT, "%s: not an IDX file: expected magic 00 00 <type> <rank>, found %02x %02x %02x "
                      "%02x", path, head[0], head[1], head[2], head[3]);
  if (head[2] != 0x08) {
    const char *name = idx_type_name(head[2]);
    if (name)
      return damo_error(DAMO_ERR_UNSUPPORTED, "%s: IDX data type 0x%02X (%s) is not supported; only 0x08 (unsigned "
                        "byte) is", path, head[2], name);
    return damo_error(DAMO_ERR_FORMAT, "%s: not an IDX file: unknown data type byte 0x%02X (expected 0x08)", path,
                      head[2]);
  }
  int ndim = head[3];
  if (ndim < 1 || ndim > DAMO_MAX_DIMS)
    return damo_error(DAMO_ERR_UNSUPPORTED, "%s: IDX rank %d is outside the supported 1..%d", path, ndim, DAMO_MAX_DIMS);
  unsigned char dims[4 * DAMO_MAX_DIMS];
  size_t dlen = 4 * (size_t)ndim;
  if (gz_read_all(gz, dims, dlen, &got) != 1) return short_read(gz, path, "dimension list", 4, dlen, got);
  int64_t shape[DAMO_MAX_DIMS];
  uint64_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    const unsigned char *p = dims + 4 * i;
    uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    shape[i] = d;
    /* Checked before multiplying: six factors below 2^32 can overflow 64 bits. */
    if (d && numel > IDX_MAX_ELEMENTS / d)
      numel = IDX_MAX_ELEMENTS + 1;
    else
      numel *= d;
  }
  if (numel > IDX_MAX_ELEMENTS) {
    char sh[128];
    return damo_error(DAMO_ERR_FORMAT, "%s: IDX shape %s is implausibly large (corrupt header?)", path,
                      damo_shape_string(ndim, shape, sh, sizeof sh));
  }
  size_t data_off = 4 + dlen;
  unsigned char *data = NULL;
  damo_status s = read_data(gz, path, ndim, shape, data_off, (size_t)numel, &data);
  if (s != DAMO_OK) return s;
  damo_tensor *t = damo_tensor_wrap(DAMO_U8, ndim, shape, data);
  if (!t) {
    damo_free(data);
    return damo_error_prefix(DAMO_ERR_NOMEM, "%s: ", path);
  }
  t->owns_data = 1;
  /* Reading past the data makes zlib finish the stream and check its CRC and length. */
  unsigned char extra[16];
  int r = gzread(gz, extra, sizeof extra);
  char zmsg[256];
  int code, bad = gz_failure(gz, path, zmsg, sizeof zmsg, &code);
  if (r < 0 || bad) {
    if (!bad) snprintf(zmsg, sizeof zmsg, "read error");
    if (bad == 2) code = Z_ERRNO;
    damo_tensor_free(t);
    return damo_error(DAMO_ERR_FORMAT, "%s: %s gzip stream (found after the %zu bytes of IDX content): %s", path,
                      code == Z_BUF_ERROR ? "truncated" : "corrupt", data_off + (size_t)numel, zmsg);
  }
  if (r > 0) {
    damo_tensor_free(t);
    return damo_error(DAMO_ERR_FORMAT, "%s: trailing data: the header's shape accounts for %zu bytes but more follow "
                      "(from byte offset %zu)", path, data_off + (size_t)numel, data_off + (size_t)numel);
  }
  *out = t;
  return DAMO_OK;
}

damo_status damo_idx_load(const char *path, damo_tensor **out) {
  if (!out) return damo_error(DAMO_ERR_INVALID_ARG, "idx_load: NULL output");
  *out = NULL;
  if (!path) return damo_error(DAMO_ERR_INVALID_ARG, "idx_load: NULL path");
  /* fopen first for a precise errno: gzopen does not always set it. */
  FILE *probe = fopen(path, "rb");
  if (!probe)
    return damo_error(errno == ENOENT ? DAMO_ERR_NOT_FOUND : DAMO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  fclose(probe);
  gzFile gz = gzopen(path, "rb");
  if (!gz) return damo_error(DAMO_ERR_IO, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
  gzbuffer(gz, 1u << 17);
  damo_status s = idx_read(gz, path, out);
  gzclose(gz);
  return s;
}
