/* libFuzzer harness: safetensors files (damo_safetensors_load). The body is fuzz_safetensors in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_safetensors)
