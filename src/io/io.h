/* io.h - io helpers that tests reach (not public API): save fault injection and plot ticks. */
#ifndef DAMO_IO_H
#define DAMO_IO_H

#include "core/core.h"

/* Fault injection for the save tests (io/atomic.c): the k-th file-system step of saves
 * from now on (open, write, fsync, link, rename, ... counted from 1) fails with EIO or kills
 * the process; k = 0 disarms. The environment variable DAMO_IO_FAULT=fail:K or kill:K arms
 * it for a whole process (read at the first step). damo_io_fault_steps: steps counted since
 * arming, so a test learns how many steps a save has. */
typedef enum damo_io_fault_mode { DAMO_IO_FAULT_FAIL = 1, DAMO_IO_FAULT_KILL = 2 } damo_io_fault_mode;
void damo_io_fault_arm(long k, damo_io_fault_mode mode);
long damo_io_fault_steps(void);

/* The epoch axis of a history plot (io/plot.c): whole-number ticks for epochs 1..n_epochs,
 * a 1-2-5 step, at most 10 and at most cap; returns how many. */
int damo_plot_epoch_ticks(int n_epochs, double *out, int cap);

#endif
