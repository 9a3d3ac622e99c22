/* libFuzzer harness: HuggingFace GPT-2 directories: config.json and model.safetensors (damo_gpt2_load). The body is fuzz_gpt2dir in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_gpt2dir)
