/* libFuzzer harness: HuggingFace BERT directories: config.json and model.safetensors (damo_bert_load). The body is fuzz_bertdir in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_bertdir)
