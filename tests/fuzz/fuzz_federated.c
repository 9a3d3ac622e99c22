/* libFuzzer harness: federated.json, resumed into a tiny federated run (damo_model_federate). The body is fuzz_federated in fuzz_targets.c. */
#include "fuzz_targets.h"

FUZZ_HARNESS(fuzz_federated)
