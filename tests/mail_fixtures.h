/* mail_fixtures.h - a tiny labelled mail set and its WordPiece vocabulary in tmpdir (for the
 * tests that train BERT through the command line): mails/ham and mails/spam, `count` mails in
 * all, and vocab.txt. Needs tmpfiles.h. */
#ifndef DAMO_TEST_MAIL_FIXTURES_H
#define DAMO_TEST_MAIL_FIXTURES_H
#include "damo.h"
#include "tmpfiles.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void write_labelled_mails(int count) {
  static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nfrom\nsubject\n:\n.\n@\nmeeting\nproject\nlunch\n"
                              "report\nschedule\nteam\nreview\nnotes\nwinner\nfree\ncash\noffer\nclick\nvia\n##gra\nprize\n"
                              "credit\nsomeone\nexample\ncom\n";
  write_bytes(tmp_path("vocab.txt"), vocab, strlen(vocab));
  static const char *const ham[] = {"meeting", "project", "lunch", "report", "schedule", "team", "review", "notes"};
  static const char *const spam[] = {"winner", "free", "cash", "offer", "click", "via", "prize", "credit"};
  mkdir(tmp_path("mails"), 0755);
  mkdir(tmp_path("mails/ham"), 0755);
  mkdir(tmp_path("mails/spam"), 0755);
  damo_rng r;
  damo_rng_seed(&r, 5);
  for (int i = 0; i < count; i++) {
    char name[64];
    snprintf(name, sizeof name, "mails/%s/%03d.txt", i % 2 ? "spam" : "ham", i);
    FILE *f = fopen(tmp_path(name), "w");
    if (!f) return;
    const char *const *pool = i % 2 ? spam : ham;
    fprintf(f, "From: someone%d@example.com\nSubject: %s\n\n", i, pool[damo_rng_below(&r, 8)]);
    for (int w = 0; w < 10 + (int)damo_rng_below(&r, 12); w++)
      fprintf(f, "%s ", damo_rng_below(&r, 4) ? pool[damo_rng_below(&r, 8)] : "the");
    fprintf(f, "\n");
    fclose(f);
  }
}
/* A small text model (embedding with mask_zero, LSTM, one sigmoid output) for the labelled
 * mails, as a config file at path: 6 epochs of Adam separate the two word pools. */
static inline void write_text_model_config(const char *path) {
  static const char config[] =
      "{\"input_shape\": [24], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 40, \"output_dim\": 8, "
      "\"mask_zero\": true}, {\"type\": \"lstm\", \"units\": 8}, {\"type\": \"dense\", \"units\": 1, "
      "\"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\", \"optimizer\": {\"type\": \"adam\", "
      "\"learning_rate\": 0.02}, \"metrics\": [\"accuracy\"], \"fit\": {\"epochs\": 6, \"batch_size\": 16, \"seed\": 1}}";
  write_bytes(path, config, strlen(config));
}
#endif
