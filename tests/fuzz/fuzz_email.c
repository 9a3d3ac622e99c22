/* libFuzzer harness: raw e-mails (damo_email_clean(_ex), damo_text_normalize, words and word ids). The body is fuzz_email in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_email)
