/* gpt2_fixtures.h - what the tests that train GPT-2 through the command line share: whether
 * GPT-2's vocabulary is installed (else they skip), and a tiny config and text in tmpdir.
 * Needs tmpfiles.h. */
#ifndef DAMO_TEST_GPT2_FIXTURES_H
#define DAMO_TEST_GPT2_FIXTURES_H
#include "damo.h"
#include "tmpfiles.h"

#include <stdio.h>

/* 1 when damo_bpe_load finds the installed vocabulary; else says the test is skipped. */
static inline int gpt2_vocab_installed(void) {
  damo_bpe *bpe = NULL;
  if (damo_bpe_load(NULL, &bpe) != DAMO_OK) {
    fprintf(stderr, "  (skipped: GPT-2 vocabulary not installed)\n");
    damo_clear_error();
    return 0;
  }
  damo_bpe_free(bpe);
  return 1;
}

/* tmpdir/<name>.json: an n_layer x width 8 GPT-2 over the whole vocabulary, 3 steps of 4
 * windows of 8; tmpdir/<name>.txt: `sentences` sentences. 0 when a file cannot be written. */
static inline int write_tiny_gpt2(const char *name, int n_layer, int sentences, char *cfg, char *text, size_t cap) {
  char file[256];
  snprintf(file, sizeof file, "%s.json", name);
  snprintf(cfg, cap, "%s", tmp_path(file));
  snprintf(file, sizeof file, "%s.txt", name);
  snprintf(text, cap, "%s", tmp_path(file));
  FILE *f = fopen(cfg, "w");
  if (!f) return 0;
  fprintf(f, "{\"model_type\": \"gpt2\", \"n_layer\": %d, \"n_head\": 2, \"n_embd\": 8, \"n_positions\": 16, "
          "\"vocab_size\": 50257, \"train\": {\"batch_size\": 4, \"seq_len\": 8, \"steps\": 3, \"warmup_steps\": 0, "
          "\"eval_windows\": 2}}", n_layer);
  fclose(f);
  if (!(f = fopen(text, "w"))) return 0;
  for (int i = 0; i < sentences; i++) fprintf(f, "the whale swam %d miles under the grey sea. ", i);
  fclose(f);
  return 1;
}
#endif
