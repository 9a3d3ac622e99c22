/* libFuzzer harness: training checkpoints (trainer_state.safetensors through damo_trainer_resume and
 * the resumed loop). The body is fuzz_checkpoint in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_checkpoint)
