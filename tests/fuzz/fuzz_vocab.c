/* libFuzzer harness: word vocabularies, vocab.txt (damo_vocab_load). The body is fuzz_vocab in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_vocab)
