/* libFuzzer harness: text through BERT's WordPiece (tokenize, encode, head+tail, decode; a small built-in vocabulary). The body is fuzz_wordpiece_encode in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_wordpiece_encode)
