/* libFuzzer harness: WordPiece vocabularies, vocab.txt or npm's vocab.json (damo_wordpiece_load). The body is fuzz_wordpiece_vocab in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_wordpiece_vocab)
