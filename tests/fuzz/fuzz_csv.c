/* libFuzzer harness: CSV files (damo_csv_load, options picked from the input length). The body is fuzz_csv in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_csv)
