/* libFuzzer harness: NumPy .npy files (damo_npy_load). The body is fuzz_npy in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_npy)
