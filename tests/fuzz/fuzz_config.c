/* libFuzzer harness: Sequential config.json text (damo_model_from_config_json, then its compile and fit options). The body is fuzz_config in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_config)
