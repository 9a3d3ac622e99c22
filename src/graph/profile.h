/* profile.h - per-op timing (graph/profile.c), read by the graph executor and the optimizer. */
#ifndef DAMO_GRAPH_PROFILE_H
#define DAMO_GRAPH_PROFILE_H

#include "core/core.h"

/* The graph executor checks damo_profile_on and records each node's forward (backward 0) or
 * backward (1); the optimizer records its step under DAMO_PROFILE_OPTIMIZER, a row after the
 * ops. */
extern int damo_profile_on;
#define DAMO_PROFILE_OPTIMIZER (-1)
void damo_profile_record(int op, int backward, double seconds);

#endif
