/* libFuzzer harness: IDX files, plain or gzip (damo_idx_load). The body is fuzz_idx in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_idx)
