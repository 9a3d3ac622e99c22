/* fs_steps.h - the file-system steps that saves are made of (src/io only). Every step that
 * changes what is on disk goes through io_step() first, so a test can fail or kill the
 * process at the k-th step of a save (damo_io_fault_arm) and check what a crash or an I/O
 * error at that point leaves behind. */
#ifndef DAMO_IO_FS_STEPS_H
#define DAMO_IO_FS_STEPS_H

#include "io/io.h"

#include <sys/types.h>

/* 0 to go on; -1 with errno EIO when the armed fault is this step (a "kill" fault never
 * returns). Call it just before the system call it guards. */
int io_step(void);

/* write(2) until done (EINTR retried); -1 with errno on failure. One io_step per call. */
int io_write_all(int fd, const void *data, size_t n);
/* fsync of a directory; file systems that cannot (EINVAL, EROFS) count as success. */
int io_sync_dir(const char *dir);
/* The directory part of path ("." for a bare name); malloc'd, NULL when out of memory. */
char *io_parent_dir(const char *path);
/* 1 when pid is a process that no longer exists (kill(pid, 0) says ESRCH). */
int io_pid_dead(long pid);
/* 1 when name is "<anything>.tmp.<digits>" left by a process that is dead (an interrupted
 * damo_write_file_atomic of an earlier run). */
int io_stale_temp_name(const char *name);

/* dir_save.c: 1 when dir is the staging folder of a directory save open in this process;
 * files written there replace entries, never follow them. */
int io_is_staging_dir(const char *dir);

#endif
