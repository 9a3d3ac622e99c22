/* atomic.c - crash-safe whole-file writes and the file-system steps saves are made of.
 * Every file damo saves (npy, safetensors, configs, vocabularies, plots) goes through
 * damo_write_file_atomic, so a reader never sees a half-written file: the bytes go to
 * "<path>.tmp.<pid>", are fsync'd, renamed over the target (atomic on POSIX file systems),
 * and the containing directory is fsync'd so the rename itself is durable. On failure the
 * temporary file is removed and the target is left as it was.
 *
 * The target is what the user named, not the directory entry: a symlink is followed (the
 * file it points at is replaced, the link stays), and an existing character device or FIFO
 * (/dev/null, /dev/stdout, a named pipe) is written in place - renaming over it would
 * replace the device with a regular file. Directories, block devices and sockets are
 * refused. Temp files of the same target left by a killed writer (dead pid) are removed.
 * Inside the staging folder of a directory save (dir_save.c) entries are replaced,
 * never followed: a carried-over symlink must not lead the new state to write outside. */
#include "io/fs_steps.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ fault injection */

static atomic_long fault_at, fault_seen;
static atomic_int fault_mode;
static atomic_int fault_env_read;

void damo_io_fault_arm(long k, damo_io_fault_mode mode) {
  atomic_store(&fault_env_read, 1);
  atomic_store(&fault_seen, 0);
  atomic_store(&fault_mode, (int)mode);
  atomic_store(&fault_at, k > 0 ? k : 0);
}

long damo_io_fault_steps(void) { return atomic_load(&fault_seen); }

/* DAMO_IO_FAULT=fail:K or kill:K arms the fault for a whole process (the CLI tests). */
static void read_fault_env(void) {
  if (atomic_exchange(&fault_env_read, 1)) return;
  const char *v = getenv("DAMO_IO_FAULT");
  if (!v) return;
  damo_io_fault_mode mode = !strncmp(v, "kill:", 5) ? DAMO_IO_FAULT_KILL : DAMO_IO_FAULT_FAIL;
  const char *colon = strchr(v, ':');
  long k = colon ? strtol(colon + 1, NULL, 10) : 0;
  atomic_store(&fault_mode, (int)mode);
  atomic_store(&fault_at, k > 0 ? k : 0);
}

int io_step(void) {
  read_fault_env();
  long at = atomic_load(&fault_at);
  if (!at) return 0;
  long n = atomic_fetch_add(&fault_seen, 1) + 1;
  if (n != at) return 0;
  if (atomic_load(&fault_mode) == DAMO_IO_FAULT_KILL) {
    raise(SIGKILL);
    _exit(137); /* not reached */
  }
  errno = EIO;
  return -1;
}

/* ------------------------------------------------------------------ helpers */

char *io_parent_dir(const char *path) {
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

int io_write_all(int fd, const void *data, size_t n) {
  if (io_step() != 0) return -1;
  const unsigned char *p = data;
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

int io_sync_dir(const char *dir) {
  if (io_step() != 0) return -1;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int saved = errno;
  close(fd);
  if (rc != 0 && saved != EINVAL && saved != EROFS) {
    errno = saved;
    return -1;
  }
  return 0;
}

int io_pid_dead(long pid) { return pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH; }

int io_stale_temp_name(const char *name) {
  const char *t = strstr(name, ".tmp.");
  if (!t) return 0;
  while (strstr(t + 1, ".tmp.")) t = strstr(t + 1, ".tmp.");
  const char *digits = t + 5;
  if (!*digits || strspn(digits, "0123456789") != strlen(digits) || strlen(digits) > 9) return 0;
  return io_pid_dead(strtol(digits, NULL, 10));
}

/* ------------------------------------------------------------------ resolving the target */

/* Where a symlink chain starting at path ends (the final name need not exist yet);
 * malloc'd. Relative links are read from the link's directory. */
static char *follow_links(const char *path) {
  char *cur = damo_strdup(path);
  for (int hops = 0; cur && hops < 40; hops++) {
    struct stat ls;
    if (lstat(cur, &ls) != 0 || !S_ISLNK(ls.st_mode)) return cur;
    char link[4096];
    ssize_t n = readlink(cur, link, sizeof link - 1);
    if (n < 0) return cur;
    link[n] = '\0';
    char *next;
    if (link[0] == '/') {
      next = damo_strdup(link);
    } else {
      char *dir = io_parent_dir(cur);
      size_t cap = (dir ? strlen(dir) : 0) + strlen(link) + 2;
      next = dir ? malloc(cap) : NULL;
      if (next) snprintf(next, cap, "%s/%s", dir, link);
      free(dir);
    }
    free(cur);
    cur = next;
  }
  if (!cur) damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
  return cur;
}

/* Writes n bytes into an existing character device or FIFO. */
static damo_status write_in_place(const char *path, const void *data, size_t n) {
  if (io_step() != 0) return damo_error(DAMO_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
  int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return damo_error(DAMO_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
  int rc = io_write_all(fd, data, n);
  int saved = errno;
  if (close(fd) != 0 && rc == 0) rc = -1, saved = errno;
  if (rc != 0) return damo_error(DAMO_ERR_IO, "%s: write failed after the start of %zu bytes: %s", path, n, strerror(saved));
  return DAMO_OK;
}

/* ------------------------------------------------------------------ the atomic write */

/* Removes "<target>.tmp.<pid>" files that a killed writer of the same file left (their pid
 * is dead): an interrupted save must not leave its temp file forever. */
static void remove_stale_temps(const char *target) {
  const char *slash = strrchr(target, '/');
  const char *base = slash ? slash + 1 : target;
  char *dir = io_parent_dir(target);
  DIR *d = dir ? opendir(dir) : NULL;
  size_t blen = strlen(base);
  for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
    if (strncmp(e->d_name, base, blen) != 0 || strncmp(e->d_name + blen, ".tmp.", 5) != 0) continue;
    if (!io_stale_temp_name(e->d_name)) continue;
    size_t n = strlen(dir) + strlen(e->d_name) + 2;
    char *path = malloc(n);
    if (path) {
      snprintf(path, n, "%s/%s", dir, e->d_name);
      unlink(path);
    }
    free(path);
  }
  if (d) closedir(d);
  free(dir);
}

static damo_status replace_file(const char *path, const char *target, const void *data, size_t n, int keep_mode,
                                mode_t mode) {
  size_t tlen = strlen(target) + 32;
  char *tmp = malloc(tlen);
  char *dir = io_parent_dir(target);
  if (!tmp || !dir) {
    free(tmp);
    free(dir);
    return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", path);
  }
  snprintf(tmp, tlen, "%s.tmp.%ld", target, (long)getpid());

  int fd = io_step() == 0 ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666) : -1;
  if (fd < 0) {
    damo_status s = damo_error(DAMO_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    free(tmp);
    free(dir);
    return s;
  }
  const char *step = NULL;
  int saved = 0;
  if (keep_mode) (void)fchmod(fd, mode); /* the replaced file's permissions, not the umask's */
  if (io_write_all(fd, data, n) != 0)
    step = "write", saved = errno;
  else if (io_step() != 0 || fsync(fd) != 0)
    step = "fsync", saved = errno;
  /* close can report a delayed write error (NFS), so it is checked too. */
  if (close(fd) != 0 && !step) step = "close", saved = errno;
  if (!step && (io_step() != 0 || rename(tmp, target) != 0)) step = "rename", saved = errno;
  if (!step && io_sync_dir(dir) != 0) {
    /* The new file is in place; only its durability is in doubt. */
    damo_status s = damo_error(DAMO_ERR_IO, "%s: cannot sync directory %s after the rename: %s", path, dir, strerror(errno));
    free(tmp);
    free(dir);
    return s;
  }
  if (step) {
    unlink(tmp);
    damo_status s = damo_error(DAMO_ERR_IO, "%s: %s failed while saving %zu bytes: %s", path, step, n, strerror(saved));
    free(tmp);
    free(dir);
    return s;
  }
  free(tmp);
  free(dir);
  return DAMO_OK;
}

damo_status damo_write_file_atomic(const char *path, const void *data, size_t n) {
  if (!path || !*path) return damo_error(DAMO_ERR_INVALID_ARG, "write_file_atomic: empty path");
  if (!data && n) return damo_error(DAMO_ERR_INVALID_ARG, "%s: write_file_atomic: NULL data", path);

  char *parent = io_parent_dir(path);
  if (!parent) return DAMO_ERR_NOMEM;
  int staging = io_is_staging_dir(parent);
  free(parent);
  if (staging) return replace_file(path, path, data, n, 0, 0);

  struct stat st;
  if (stat(path, &st) == 0) {
    if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return write_in_place(path, data, n);
    if (S_ISDIR(st.st_mode)) return damo_error(DAMO_ERR_IO, "%s: is a directory, expected a file name", path);
    if (!S_ISREG(st.st_mode))
      return damo_error(DAMO_ERR_IO, "%s: is a %s; damo writes regular files, character devices and FIFOs", path,
                        S_ISBLK(st.st_mode) ? "block device" : "socket");
  }
  char *target = follow_links(path);
  if (!target) return DAMO_ERR_NOMEM;
  remove_stale_temps(target);
  int existed = stat(target, &st) == 0 && S_ISREG(st.st_mode);
  damo_status s = replace_file(path, target, data, n, existed, existed ? (st.st_mode & 07777) : 0);
  free(target);
  return s;
}
