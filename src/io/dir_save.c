/* dir_save.c - directories that change from one complete state to the next, and the lock
 * that keeps two runs out of one directory.
 *
 * A save never edits the directory in place. damo_dir_save_begin makes a staging folder
 * next to it, ".<name>.saving.<pid>.<host>", holding hard links to everything the
 * directory holds (history, vocabularies, files of the user's: cheap, and nothing is
 * copied); the saver then writes its new files into the staging folder (each one replaces
 * its link, so the old files are never touched), and damo_dir_save_commit swaps the two
 * folders with one renameat2(RENAME_EXCHANGE) and removes the old tree. A reader, a crash
 * or an I/O error at any step sees either the old complete directory or the new one: before
 * the swap only the staging folder changed, after it the old tree is garbage. A staging
 * folder left by a dead process (same host, pid gone) is removed by the next save. Where
 * the file system cannot exchange (EINVAL), two renames are used and the directory is
 * absent between them (both states are complete on disk then).
 *
 * Why not a manifest written last: GPT-2 and BERT directories must stay HuggingFace
 * directories whose config.json and model.safetensors are read by name, so the switch has
 * to move the whole directory.
 *
 * The lock is ".damo.lock" inside the directory, held with flock(2) (released by the kernel
 * when the holder dies, so a kill never leaves a stale lock) and holding the holder's pid
 * for the refusal message. The staging folder carries a hard link to the same lock file, so
 * after a swap the lock the run holds is still the directory's lock. */
#define _GNU_SOURCE /* renameat2 and RENAME_EXCHANGE */
#include "io/fs_steps.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOCK_NAME ".damo.lock"
#define MAX_DEPTH 16
#define REG_MAX 32

struct damo_dir_lock {
  int fd;
  int created; /* the lock made the directory: release removes it if nothing was saved */
  long pid;  /* the holder: a forked child inherits the registry, not the lock */
  char *dir; /* resolved */
};

struct damo_dir_save {
  char *name;    /* as the caller named it, for messages */
  char *dir;     /* the directory being saved, symlinks resolved */
  char *staging; /* where the new state is assembled */
  int joined;    /* begun on an open staging folder: commit and abort leave it to the outer save */
  damo_dir_lock *own_lock;
};

/* ------------------------------------------------------------------ the process's registry */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *staging_reg[REG_MAX];
static damo_dir_lock *lock_reg[REG_MAX];

static int reg_add(const void **table, const void *item) {
  pthread_mutex_lock(&reg_mu);
  int ok = 0;
  for (int i = 0; i < REG_MAX && !ok; i++)
    if (!table[i]) table[i] = item, ok = 1;
  pthread_mutex_unlock(&reg_mu);
  return ok;
}

/* Registers a staging path unless an equal one is open: two threads of one process saving
 * the same directory would share the staging name, and the second would wipe the first's. */
static int reg_add_staging(const char *path) {
  pthread_mutex_lock(&reg_mu);
  int free_slot = -1, taken = 0;
  for (int i = 0; i < REG_MAX; i++) {
    if (staging_reg[i] && !strcmp(staging_reg[i], path)) taken = 1;
    if (!staging_reg[i] && free_slot < 0) free_slot = i;
  }
  if (!taken && free_slot >= 0) staging_reg[free_slot] = path;
  pthread_mutex_unlock(&reg_mu);
  return taken ? -1 : free_slot >= 0 ? 1 : 0;
}

static void reg_remove(const void **table, const void *item) {
  pthread_mutex_lock(&reg_mu);
  for (int i = 0; i < REG_MAX; i++)
    if (table[i] == item) table[i] = NULL;
  pthread_mutex_unlock(&reg_mu);
}

int io_is_staging_dir(const char *dir) {
  char resolved[PATH_MAX];
  if (!realpath(dir, resolved)) return 0;
  pthread_mutex_lock(&reg_mu);
  int found = 0;
  for (int i = 0; i < REG_MAX && !found; i++) found = staging_reg[i] && !strcmp(staging_reg[i], resolved);
  pthread_mutex_unlock(&reg_mu);
  return found;
}

static int lock_held_here(const char *resolved) {
  pthread_mutex_lock(&reg_mu);
  int found = 0;
  for (int i = 0; i < REG_MAX && !found; i++)
    found = lock_reg[i] && lock_reg[i]->pid == (long)getpid() && !strcmp(lock_reg[i]->dir, resolved);
  pthread_mutex_unlock(&reg_mu);
  return found;
}

/* ------------------------------------------------------------------ paths */

static char *join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

static void host_name(char *buf, size_t cap) {
  if (gethostname(buf, cap) != 0) snprintf(buf, cap, "host");
  buf[cap - 1] = '\0';
  for (char *c = buf; *c; c++)
    if (*c == '/') *c = '_';
}

/* "<parent>/.<base>.<what>.<pid>.<host>" for the resolved directory dir. */
static char *sibling_name(const char *dir, const char *what, long pid) {
  const char *slash = strrchr(dir, '/');
  char host[64];
  host_name(host, sizeof host);
  size_t n = strlen(dir) + strlen(what) + strlen(host) + 40;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%.*s/.%s.%s.%ld.%s", (int)(slash - dir), dir, slash + 1, what, pid, host);
  return p;
}

/* The directory with symlinks and relative parts resolved; it must exist. */
static damo_status resolve_dir(const char *dir, char **out) {
  char buf[PATH_MAX];
  struct stat st;
  if (!realpath(dir, buf) || stat(buf, &st) != 0)
    return damo_error(DAMO_ERR_IO, "%s: cannot resolve the directory: %s", dir, strerror(errno));
  if (!S_ISDIR(st.st_mode)) return damo_error(DAMO_ERR_IO, "%s: exists and is not a directory", dir);
  if (!strcmp(buf, "/")) return damo_error(DAMO_ERR_INVALID_ARG, "%s: cannot save into the root directory", dir);
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) && !strcmp(cwd, buf))
    return damo_error(DAMO_ERR_INVALID_ARG, "%s: is the current directory, which a save cannot switch; name a folder "
                      "inside it", dir);
  *out = damo_strdup(buf);
  return *out ? DAMO_OK : DAMO_ERR_NOMEM;
}

static damo_status make_dir(const char *dir) {
  if (mkdir(dir, 0755) == 0 || errno == EEXIST) return DAMO_OK;
  return damo_error(DAMO_ERR_IO, "%s: cannot create the directory: %s", dir, strerror(errno));
}

/* ------------------------------------------------------------------ trees */

/* Removes path and everything under it; best effort (a leftover is cleaned by a later save). */
static void remove_tree(const char *path, int depth) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (S_ISDIR(st.st_mode) && depth < MAX_DEPTH) {
    DIR *d = opendir(path);
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char *child = join(path, e->d_name);
      if (child) remove_tree(child, depth + 1);
      free(child);
    }
    if (d) closedir(d);
    if (io_step() == 0) rmdir(path);
  } else if (io_step() == 0) {
    unlink(path);
  }
}

/* Copies a regular file (for file systems without hard links); -1 with errno. */
static int copy_file(const char *from, const char *to, mode_t mode) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0) return -1;
  int out = io_step() == 0 ? open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode) : -1;
  int rc = out < 0 ? -1 : 0, saved = errno;
  char buf[1 << 16];
  for (ssize_t n; rc == 0 && (n = read(in, buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || io_write_all(out, buf, (size_t)n) != 0) rc = -1, saved = errno;
  }
  if (rc == 0 && fsync(out) != 0) rc = -1, saved = errno;
  if (out >= 0 && close(out) != 0 && rc == 0) rc = -1, saved = errno;
  close(in);
  errno = saved;
  return rc;
}

/* Hard-links every entry of src into the existing folder dst (sub-folders recreated),
 * leaving out temp files of dead processes; then syncs dst. */
static damo_status link_tree(const char *src, const char *dst, int depth) {
  if (depth >= MAX_DEPTH) return damo_error(DAMO_ERR_IO, "%s: folders nested deeper than %d", src, MAX_DEPTH);
  DIR *d = opendir(src);
  if (!d) return damo_error(DAMO_ERR_IO, "%s: cannot list the directory: %s", src, strerror(errno));
  damo_status st = DAMO_OK;
  for (struct dirent *e = readdir(d); e && st == DAMO_OK; e = readdir(d)) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || io_stale_temp_name(e->d_name)) continue;
    char *from = join(src, e->d_name), *to = join(dst, e->d_name);
    struct stat s;
    if (!from || !to) {
      st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", src);
    } else if (lstat(from, &s) != 0) {
      if (errno != ENOENT) st = damo_error(DAMO_ERR_IO, "%s: %s", from, strerror(errno));
    } else if (S_ISDIR(s.st_mode)) {
      if (io_step() != 0 || mkdir(to, s.st_mode & 07777) != 0)
        st = damo_error(DAMO_ERR_IO, "%s: cannot create folder: %s", to, strerror(errno));
      else
        st = link_tree(from, to, depth + 1);
    } else if (io_step() != 0 || linkat(AT_FDCWD, from, AT_FDCWD, to, 0) != 0) {
      /* A file removed meanwhile (ENOENT) is simply not part of the new state; a file system
       * without hard links gets a copy of regular files. */
      int e = errno;
      if ((e == EPERM || e == EXDEV || e == EMLINK || e == ENOTSUP) && S_ISREG(s.st_mode)) {
        if (copy_file(from, to, s.st_mode & 07777) != 0) e = errno;
        else e = 0;
      }
      if (e && e != ENOENT) st = damo_error(DAMO_ERR_IO, "%s: cannot link into the new state %s: %s", from, to, strerror(e));
    }
    free(from);
    free(to);
  }
  closedir(d);
  if (st == DAMO_OK && io_sync_dir(dst) != 0)
    st = damo_error(DAMO_ERR_IO, "%s: cannot sync: %s", dst, strerror(errno));
  return st;
}

/* Removes ".<base>.saving.<pid>.<host>" and ".<base>.old.<pid>.<host>" folders of this host
 * whose process is dead (a save that was killed). */
static void clean_stale(const char *dir) {
  const char *slash = strrchr(dir, '/');
  char *parent = slash == dir ? damo_strdup("/") : io_parent_dir(dir);
  char host[64];
  host_name(host, sizeof host);
  DIR *d = parent ? opendir(parent) : NULL;
  size_t blen = strlen(slash + 1);
  for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d)) {
    const char *n = e->d_name;
    if (n[0] != '.' || strncmp(n + 1, slash + 1, blen) != 0) continue;
    const char *rest = n + 1 + blen;
    if (!strncmp(rest, ".saving.", 8)) rest += 8;
    else if (!strncmp(rest, ".old.", 5)) rest += 5;
    else continue;
    char *end;
    long pid = strtol(rest, &end, 10);
    if (end == rest || *end != '.' || strcmp(end + 1, host) != 0 || !io_pid_dead(pid)) continue;
    char *path = join(parent, n);
    if (path) remove_tree(path, 0);
    free(path);
  }
  if (d) closedir(d);
  free(parent);
}

/* ------------------------------------------------------------------ the lock */

static damo_status lock_dir(const char *resolved, damo_dir_lock **out) {
  *out = NULL;
  if (lock_held_here(resolved))
    return damo_error(DAMO_ERR_STATE, "%s: this process already holds the directory's lock", resolved);
  char *path = join(resolved, LOCK_NAME);
  if (!path) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", resolved);
  int fd = -1;
  damo_status st = DAMO_OK;
  for (int tries = 0; tries < 8 && st == DAMO_OK; tries++) {
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      st = damo_error(DAMO_ERR_IO, "%s: cannot write in the directory (creating its lock file %s: %s)", resolved,
                      LOCK_NAME, strerror(errno));
      break;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      /* The holder writes its pid just after locking: give it a moment to. */
      long pid = 0;
      for (int wait = 0; wait < 50 && pid <= 0; wait++) {
        char text[32] = {0};
        ssize_t n = pread(fd, text, sizeof text - 1, 0);
        pid = n > 0 ? strtol(text, NULL, 10) : 0;
        if (pid <= 0) nanosleep(&(struct timespec){0, 2000000}, NULL);
      }
      close(fd);
      fd = -1;
      if (pid > 0)
        st = damo_error(DAMO_ERR_STATE, "%s: is being written by process %ld (it holds %s/%s); wait for it or use "
                        "another directory", resolved, pid, resolved, LOCK_NAME);
      else
        st = damo_error(DAMO_ERR_STATE, "%s: is being written by another process (it holds %s/%s)", resolved, resolved,
                        LOCK_NAME);
      break;
    }
    /* The file locked must still be the directory's lock file: a holder that released it
     * may have unlinked it between our open and flock. */
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) break;
    close(fd);
    fd = -1;
  }
  if (st == DAMO_OK && fd < 0) st = damo_error(DAMO_ERR_STATE, "%s: its lock file keeps changing", resolved);
  free(path);
  if (st != DAMO_OK) return st;
  char text[32];
  int len = snprintf(text, sizeof text, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) {
    st = damo_error(DAMO_ERR_IO, "%s: cannot write its lock file: %s", resolved, strerror(errno));
    close(fd);
    return st;
  }
  damo_dir_lock *l = calloc(1, sizeof *l);
  if (l) l->dir = damo_strdup(resolved);
  if (!l || !l->dir || !reg_add((const void **)lock_reg, l)) {
    close(fd);
    if (l) free(l->dir);
    free(l);
    return damo_error(DAMO_ERR_NOMEM, "%s: cannot record the lock (out of memory or too many locks)", resolved);
  }
  l->fd = fd;
  l->pid = (long)getpid();
  *out = l;
  return DAMO_OK;
}

damo_status damo_dir_lock_acquire(const char *dir, damo_dir_lock **out) {
  if (!dir || !*dir || !out) return damo_error(DAMO_ERR_INVALID_ARG, "dir_lock_acquire: NULL argument");
  *out = NULL;
  char *resolved = NULL;
  struct stat before;
  int existed = stat(dir, &before) == 0;
  damo_status st = make_dir(dir);
  if (st == DAMO_OK) st = resolve_dir(dir, &resolved);
  if (st == DAMO_OK) st = lock_dir(resolved, out);
  if (st == DAMO_OK) (*out)->created = !existed;
  else if (!existed) rmdir(dir);
  /* A save assembles the new state next to the directory: check now that it can, rather
   * than after hours of training. */
  char *probe = st == DAMO_OK ? sibling_name(resolved, "saving", (long)getpid()) : NULL;
  if (st == DAMO_OK && probe) {
    if (mkdir(probe, 0755) != 0 && errno != EEXIST) {
      st = damo_error(DAMO_ERR_IO, "%s: cannot create %s next to it, which saving needs (the new state is written "
                      "beside the old and switched with one rename): %s", dir, probe, strerror(errno));
      damo_dir_lock_release(*out);
      *out = NULL;
    } else {
      rmdir(probe);
    }
  }
  free(probe);
  free(resolved);
  return st;
}

void damo_dir_lock_release(damo_dir_lock *l) {
  if (!l) return;
  reg_remove((const void **)lock_reg, l);
  /* Unlinked while still held: a process that opened it meanwhile sees the inode change
   * after its flock and retries, so removing the file cannot let two holders in. */
  char *path = join(l->dir, LOCK_NAME);
  if (path) unlink(path);
  free(path);
  if (l->created) rmdir(l->dir); /* only if empty: a run that failed before saving leaves nothing */
  close(l->fd);
  free(l->dir);
  free(l);
}

/* ------------------------------------------------------------------ saves */

damo_status damo_dir_save_begin(const char *dir, damo_dir_save **out) {
  if (!dir || !*dir || !out) return damo_error(DAMO_ERR_INVALID_ARG, "dir_save_begin: NULL argument");
  *out = NULL;
  damo_dir_save *s = calloc(1, sizeof *s);
  if (!s) return damo_error(DAMO_ERR_NOMEM, "%s: out of memory", dir);
  if (io_is_staging_dir(dir)) {
    /* A save nested in another save of the same directory (a checkpoint writing the model
     * and then its state): write into the folder being assembled; the outer save switches. */
    s->joined = 1;
    s->staging = damo_strdup(dir);
    if (!s->staging) return free(s), DAMO_ERR_NOMEM;
    *out = s;
    return DAMO_OK;
  }
  s->name = damo_strdup(dir);
  damo_status st = s->name ? make_dir(dir) : DAMO_ERR_NOMEM;
  if (st == DAMO_OK) st = resolve_dir(dir, &s->dir);
  if (st == DAMO_OK && !lock_held_here(s->dir)) st = lock_dir(s->dir, &s->own_lock);
  if (st == DAMO_OK) {
    clean_stale(s->dir);
    s->staging = sibling_name(s->dir, "saving", (long)getpid());
    if (!s->staging) st = damo_error(DAMO_ERR_NOMEM, "%s: out of memory", dir);
  }
  int registered = st == DAMO_OK ? reg_add_staging(s->staging) : 0;
  if (st == DAMO_OK && registered <= 0) {
    st = damo_error(DAMO_ERR_STATE, registered < 0 ? "%s: another thread of this process is saving it" :
                                                     "%s: too many directory saves open at once", dir);
    free(s->staging);
    s->staging = NULL;
  }
  if (st == DAMO_OK) {
    remove_tree(s->staging, 0); /* an earlier save of this process that could not clean up */
    struct stat ds;
    mode_t mode = stat(s->dir, &ds) == 0 ? (ds.st_mode & 07777) : 0755;
    if (io_step() != 0 || mkdir(s->staging, mode) != 0)
      st = damo_error(DAMO_ERR_IO, "%s: cannot create the staging folder %s: %s", dir, s->staging, strerror(errno));
  }
  if (st == DAMO_OK && (st = link_tree(s->dir, s->staging, 0)) != DAMO_OK)
    damo_error_prefix(st, "saving %s: preparing the new state: ", dir);
  if (st != DAMO_OK) {
    damo_dir_save_abort(s);
    return st;
  }
  *out = s;
  return DAMO_OK;
}

const char *damo_dir_save_folder(const damo_dir_save *s) { return s ? s->staging : NULL; }

static void save_free(damo_dir_save *s) {
  damo_dir_lock_release(s->own_lock);
  free(s->name);
  free(s->dir);
  free(s->staging);
  free(s);
}

void damo_dir_save_abort(damo_dir_save *s) {
  if (!s) return;
  if (!s->joined && s->staging) {
    reg_remove((const void **)staging_reg, s->staging);
    remove_tree(s->staging, 0);
  }
  save_free(s);
}

damo_status damo_dir_save_commit(damo_dir_save *s) {
  if (!s) return damo_error(DAMO_ERR_INVALID_ARG, "dir_save_commit: NULL argument");
  if (s->joined) {
    save_free(s);
    return DAMO_OK;
  }
  if (io_sync_dir(s->staging) != 0) {
    damo_status st = damo_error(DAMO_ERR_IO, "%s: cannot sync the new state in %s: %s", s->name, s->staging,
                                strerror(errno));
    damo_dir_save_abort(s);
    return st;
  }
  /* The switch: from here on the directory is the new state. */
  const char *old_tree = s->staging;
  char *fallback_old = NULL;
#ifdef RENAME_EXCHANGE
  int rc = io_step() == 0 ? renameat2(AT_FDCWD, s->staging, AT_FDCWD, s->dir, RENAME_EXCHANGE) : -1;
#else
  int rc = (errno = ENOSYS, -1); /* not Linux: the two-rename path below */
#endif
  if (rc != 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
    /* No exchange on this file system: move the old state aside, then the new one in. */
    fallback_old = sibling_name(s->dir, "old", (long)getpid());
    rc = !fallback_old ? (errno = ENOMEM, -1) : io_step() == 0 ? rename(s->dir, fallback_old) : -1;
    if (rc == 0 && (io_step() != 0 || rename(s->staging, s->dir) != 0)) {
      int saved = errno;
      rename(fallback_old, s->dir); /* put the old state back */
      errno = saved;
      rc = -1;
    }
    old_tree = fallback_old;
  }
  if (rc != 0) {
    damo_status st = damo_error(DAMO_ERR_IO, "%s: cannot switch to the new state in %s: %s", s->name, s->staging,
                                strerror(errno));
    free(fallback_old);
    damo_dir_save_abort(s);
    return st;
  }
  reg_remove((const void **)staging_reg, s->staging);
  damo_status st = DAMO_OK;
  char *parent = io_parent_dir(s->dir);
  if (parent && io_sync_dir(parent) != 0)
    st = damo_error(DAMO_ERR_IO, "%s: the new state is in place but the parent folder could not be synced: %s", s->name,
                    strerror(errno));
  free(parent);
  remove_tree(old_tree, 0);
  free(fallback_old);
  save_free(s);
  return st;
}
