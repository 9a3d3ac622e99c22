/* libFuzzer harness: pictures through stb_image (damo_image_load, damo_image_to_model_input, damo_image_resize). The body is fuzz_image in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_image)
