/* libFuzzer harness: text through GPT-2's BPE (damo_bpe_encode and decode, a small built-in vocabulary). The body is fuzz_bpe_encode in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_bpe_encode)
