/* The bodies of damo's fuzz targets, shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.c,
 * built with -DDAMO_FUZZ=ON) and the regression unit test (tests/test_fuzz_regressions.c,
 * built by every `make test`), so a committed crash input is replayed through exactly the
 * code the fuzzer ran.
 *
 * Each target takes the fuzzer's bytes, hands them to one reader of damo (through a temp
 * file when the reader takes a path) and returns the reader's status; on success it uses
 * and frees what was read. A target aborts (a finding) only when a documented property of
 * the result is broken, e.g. cleaned e-mail text holding an upper-case ASCII letter. A
 * target returns FUZZ_SKIPPED for inputs it does not run (see the guard in fuzz_targets.c). */
#ifndef DAMO_FUZZ_TARGETS_H
#define DAMO_FUZZ_TARGETS_H
#include <stddef.h>
#include <stdint.h>

#define FUZZ_SKIPPED (-1)

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

typedef struct fuzz_target {
  const char *name; /* the harness is fuzz_<name>, its corpus tests/fuzz/corpus/<name> */
  fuzz_fn fn;
} fuzz_target;

int fuzz_npy(const uint8_t *data, size_t size);
int fuzz_safetensors(const uint8_t *data, size_t size);
int fuzz_config(const uint8_t *data, size_t size);
int fuzz_seqdir(const uint8_t *data, size_t size);
int fuzz_gpt2dir(const uint8_t *data, size_t size);
int fuzz_bertdir(const uint8_t *data, size_t size);
int fuzz_csv(const uint8_t *data, size_t size);
int fuzz_idx(const uint8_t *data, size_t size);
int fuzz_image(const uint8_t *data, size_t size);
int fuzz_email(const uint8_t *data, size_t size);
int fuzz_vocab(const uint8_t *data, size_t size);
int fuzz_bpe_vocab(const uint8_t *data, size_t size);
int fuzz_bpe_encode(const uint8_t *data, size_t size);
int fuzz_wordpiece_vocab(const uint8_t *data, size_t size);
int fuzz_wordpiece_encode(const uint8_t *data, size_t size);
/* trainer_state.safetensors resumed into a fixed tiny run (damo_trainer_resume), which then
 * runs to its end; fuzz_checkpoint_seed writes a valid one (its first checkpoint) to path. */
int fuzz_checkpoint(const uint8_t *data, size_t size);
int fuzz_checkpoint_seed(const char *path);
/* federated.json resumed into a fixed tiny federated run (damo_model_federate), which then
 * runs its remaining rounds; fuzz_federated_seed leaves a finished run's directory in dir. */
int fuzz_federated(const uint8_t *data, size_t size);
int fuzz_federated_seed(const char *dir);

/* All targets by name, ended by {NULL, NULL}. */
extern const fuzz_target fuzz_targets[];
const fuzz_target *fuzz_target_find(const char *name);

/* The folder holding the files of the built-in vocabulary of fuzz_bpe_encode ("bpe":
 * encoder.json, vocab.bpe) or fuzz_wordpiece_encode ("wordpiece": vocab.txt). */
const char *fuzz_builtin_dir(const char *which);

/* Inputs holding two files (a config.json and a model.safetensors, encoder.json and
 * vocab.bpe) separate them with this line; the first file is everything before it. */
#define FUZZ_SPLIT "\n#damo-fuzz-next-file#\n"

/* 1 (the default): targets skip inputs that hit the known defects named in fuzz_targets.c. */

/* Each fuzz_<name>.c harness is this one line. */
#define FUZZ_HARNESS(fn)                                                  \
  int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);           \
  int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {          \
    (void)fn(data, size);                                                 \
    return 0;                                                             \
  }
#endif
