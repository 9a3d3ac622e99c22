/* test_layers.c - scripts/check_layers.py, the layering check `make test` runs: the
 * repository passes, and in a copy of its tree each kind of violation (an include of a higher
 * layer, written relative or with angle brackets, a CLI file reaching into src/, a folder in
 * no layer, a header that is not there, a reordered table) fails with the file and line. */
#include "harness.h"
#include "cli_run.h"
#include "tmpfiles.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECKER "python3 " DAMO_SOURCE_DIR "/scripts/check_layers.py"

static char copy[512]; /* tmpdir/tree: the copied repository */

static int has(const char *needle) { return strstr(cli_out, needle) != NULL; }

/* Writes text to copy/rel, runs the checker on the copy, removes the file; returns the exit status. */
static int check_with(const char *rel, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", copy, rel);
  write_bytes(path, text, strlen(text));
  int rc = run("%s --root %s", CHECKER, copy);
  unlink(path);
  return rc;
}

static void test_repository_passes(void) {
  int rc = run("%s", CHECKER);
  CHECK_MSG(rc == 0, "%s", cli_out);
  CHECK_MSG(has("all downward (core < dist < tensor < kernels"), "%s", cli_out);
}

static void test_copy_passes(void) {
  int rc = run("%s --root %s", CHECKER, copy);
  CHECK_MSG(rc == 0, "%s", cli_out);
}

static void test_higher_layer_fails(void) {
  int rc = check_with("src/core/zz_bad.c", "/* bad */\n#include \"train/model.h\"\n");
  CHECK(rc == 1);
  CHECK_MSG(has("src/core/zz_bad.c:2: includes \"train/model.h\" (src/train/model.h) of higher layer train from "
                "layer core"), "%s", cli_out);
  /* The same layer and the ones below are allowed. */
  rc = check_with("src/train/zz_ok.c", "#include \"damo.h\"\n#include \"train/model.h\"\n#include \"core/core.h\"\n");
  CHECK_MSG(rc == 0, "%s", cli_out);
}

static void test_relative_and_angle_includes_fail(void) {
  int rc = check_with("src/io/zz_rel.c", "#include \"../text/text_internal.h\"\n");
  CHECK(rc == 1);
  CHECK_MSG(has("src/io/zz_rel.c:1: includes \"../text/text_internal.h\" (src/text/text_internal.h) of higher "
                "layer text from layer io"), "%s", cli_out);
  rc = check_with("src/nn/zz_angle.c", "#include <stdio.h>\n  #  include <models/gpt2.h>\n");
  CHECK(rc == 1);
  CHECK_MSG(has("src/nn/zz_angle.c:2: includes \"models/gpt2.h\" (src/models/gpt2.h) of higher layer models"), "%s",
            cli_out);
}

static void test_graph_may_not_include_ops(void) {
  int rc = check_with("src/graph/zz_ops.c", "#include \"ops/ops.h\"\n");
  CHECK(rc == 1);
  CHECK_MSG(has("of higher layer ops from layer graph"), "%s", cli_out);
}

static void test_cli_only_public_header(void) {
  int rc = check_with("cli/zz_cli.c", "#include \"cli.h\"\n#include \"damo.h\"\n#include \"core/core.h\"\n");
  CHECK(rc == 1);
  CHECK_MSG(has("cli/zz_cli.c:3: includes \"core/core.h\" (src/core/core.h, layer core): cli/ is a program"),
            "%s", cli_out);
}

static void test_unknown_folder_and_header_fail(void) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/src/zz", copy);
  CHECK(mkdir(dir, 0755) == 0);
  int rc = check_with("src/zz/a.c", "#include \"damo.h\"\n");
  CHECK(rc == 1);
  CHECK_MSG(has("src/zz/a.c: in no layer of ARCHITECTURE.md's table"), "%s", cli_out);
  rmdir(dir);
  rc = check_with("src/text/zz_missing.c", "\n\n#include \"text/no_such_header.h\"\n");
  CHECK(rc == 1);
  CHECK_MSG(has("src/text/zz_missing.c:3: includes \"text/no_such_header.h\", which is not in the tree"), "%s",
            cli_out);
}

/* The order is the table's: with the core row moved to the bottom, core may include nothing
 * above it and every other layer's include of core/core.h is a violation. */
static void test_order_comes_from_the_table(void) {
  int rc = run("cd %s && grep -v '^| core |' ARCHITECTURE.md > a.md && grep '^| core |' ARCHITECTURE.md > c.md && "
               "awk 'FNR == NR { core = $0; next } /^\\| cli \\|/ { print; print core; next } { print }' c.md a.md "
               "> ARCHITECTURE.md && rm a.md c.md", copy);
  CHECK_MSG(rc == 0, "%s", cli_out);
  rc = run("%s --root %s", CHECKER, copy);
  CHECK(rc == 1);
  CHECK_MSG(has("of higher layer core from layer tensor (order: dist < tensor < kernels"), "%s", cli_out);
  run("cp %s/ARCHITECTURE.md %s/ARCHITECTURE.md", DAMO_SOURCE_DIR, copy);
  rc = run("%s --root %s", CHECKER, copy);
  CHECK_MSG(rc == 0, "%s", cli_out);
}

int main(void) {
  tmpdir_template("layers");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(copy, sizeof copy, "%s", tmp_path("tree"));
  int rc = run("mkdir %s && cp -R %s/ARCHITECTURE.md %s/src %s/cli %s/include %s", copy, DAMO_SOURCE_DIR,
               DAMO_SOURCE_DIR, DAMO_SOURCE_DIR, DAMO_SOURCE_DIR, copy);
  CHECK_MSG(rc == 0, "copying the tree: %s", cli_out);
  RUN(test_repository_passes);
  RUN(test_copy_passes);
  RUN(test_higher_layer_fails);
  RUN(test_relative_and_angle_includes_fail);
  RUN(test_graph_may_not_include_ops);
  RUN(test_cli_only_public_header);
  RUN(test_unknown_folder_and_header_fail);
  RUN(test_order_comes_from_the_table);
  run("rm -rf %s", tmpdir);
  return test_summary("test_layers");
}
