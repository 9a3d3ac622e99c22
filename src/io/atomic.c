/* atomic.c - crash-safe whole-file writes. Every file damo saves (npy, safetensors, model
 * configs) goes through damo_write_file_atomic so a reader never sees a half-written file:
 * the bytes go to "<path>.tmp.<pid>", are fsync'd, renamed over the target (atomic on POSIX
 * file systems), and the containing directory is fsync'd so the rename itself is durable.
 * On any failure the temporary file is removed and the target is left as it was. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directory holding path ("." for a bare name, "/" for a top-level entry); malloc'd. */
static char *parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return damo_strdup(".");
  size_t n = (size_t)(slash - path);
  if (n == 0) n = 1; /* "/name" lives in "/" */
  char *d = malloc(n + 1);
  if (!d) {
    damo_error(DAMO_ERR_NOMEM, "out of memory");
    return NULL;
  }
  memcpy(d, path, n);
  d[n] = '\0';
  return d;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    /* Chunks of at most 1 GiB: some kernels cap a single write below SSIZE_MAX. */
    size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
    ssize_t w = write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (w == 0) {
      errno = EIO;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static damo_status sync_dir(const char *path) {
  char *dir = parent_dir(path);
  if (!dir) return DAMO_ERR_NOMEM;
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) {
    damo_status s = damo_error(DAMO_ERR_IO, "%s: cannot open directory %s to sync the rename: %s", path, dir,
                               strerror(errno));
    free(dir);
    return s;
  }
  /* Some file systems cannot fsync a directory (EINVAL); the rename has happened, so that
   * is not worth failing the save over. */
  if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    damo_status s = damo_error(DAMO_ERR_IO, "%s: cannot sync directory %s: %s", path, dir, strerror(errno));
    close(fd);
    free(dir);
    return s;
  }
  close(fd);
  free(dir);
  return DAMO_OK;
}

damo_status damo_write_file_atomic(const char *path, const void *data, size_t n) {
  if (!path || !*path) return damo_error(DAMO_ERR_INVALID_ARG, "write_file_atomic: empty path");
  if (!data && n) return damo_error(DAMO_ERR_INVALID_ARG, "%s: write_file_atomic: NULL data", path);

  size_t tlen = strlen(path) + 32;
  char *tmp = malloc(tlen);
  if (!tmp) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
  snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  if (fd < 0) {
    damo_status s = damo_error(DAMO_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    free(tmp);
    return s;
  }
  const char *step = NULL;
  if (write_all(fd, data, n) != 0)
    step = "write";
  else if (fsync(fd) != 0)
    step = "fsync";
  int saved = errno;
  /* close can report a delayed write error (NFS), so it is checked too. */
  if (close(fd) != 0 && !step) {
    step = "close";
    saved = errno;
  }
  if (!step && rename(tmp, path) != 0) {
    step = "rename";
    saved = errno;
  }
  if (step) {
    unlink(tmp);
    damo_status s = damo_error(DAMO_ERR_IO, "%s: %s failed while saving %zu bytes: %s", path, step, n, strerror(saved));
    free(tmp);
    return s;
  }
  free(tmp);
  return sync_dir(path);
}
