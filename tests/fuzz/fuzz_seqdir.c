/* libFuzzer harness: Sequential model directories: config.json and model.safetensors (damo_model_load). The body is fuzz_seqdir in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_seqdir)
