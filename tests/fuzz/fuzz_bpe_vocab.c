/* libFuzzer harness: GPT-2 vocabularies: encoder.json and vocab.bpe (damo_bpe_load). The body is fuzz_bpe_vocab in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_bpe_vocab)
