#!/usr/bin/env python3
"""check_layers.py - fails when a source file includes a header of a layer above its own.

The layer order is read from ARCHITECTURE.md's layer table (the one place it is written):
its rows, top to bottom, go from the lowest layer to the highest, and the `folder` column
says which files belong to each. A file may include headers of its own layer and of the
layers above its row; include/ (the public damo.h) may be included from anywhere. A layer
whose folder is outside src/ (cli/) is a program on top of the library: it may include only
include/ and its own folder.

usage: check_layers.py [--root DIR] [FILE...]
  --root DIR  the tree to check (default: the repository holding this script)
  FILE...     check only these files (paths relative to the root); default: every .c and .h
              under the table's folders and under src/
Exit status: 0 when every include is allowed, 1 on a violation or a tree the table does not
describe (a folder in no row, a row whose folder is missing, a header that cannot be found),
2 on bad usage.
"""
import os
import re
import sys

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')
PUBLIC = "include/"


def fail_usage(msg):
    sys.stderr.write("check_layers: %s\n" % msg)
    sys.exit(2)


def read_table(root):
    """[(layer, folder)] from ARCHITECTURE.md's table whose header is | layer | folder | ..."""
    path = os.path.join(root, "ARCHITECTURE.md")
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        fail_usage("cannot read %s: %s" % (path, e.strerror))
    rows, in_table = [], False
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if not in_table:
            if cells and len(cells) >= 2 and cells[0] == "layer" and cells[1] == "folder":
                in_table = True
            continue
        if cells is None:
            break
        if set(cells[0]) <= set("-: "):  # the |---| line
            continue
        folder = cells[1].strip("`")
        if not folder.endswith("/"):
            folder += "/"
        rows.append((cells[0], folder))
    if not rows:
        fail_usage("%s has no layer table (a table whose header is '| layer | folder |')" % path)
    return rows


def layer_of(rel, rows):
    """Index of the row owning rel (longest folder prefix), or None."""
    best, best_len = None, -1
    for i, (_, folder) in enumerate(rows):
        if rel.startswith(folder) and len(folder) > best_len:
            best, best_len = i, len(folder)
    return best


def source_files(root, rows):
    found = set()
    tops = {folder for _, folder in rows} | {"src/"}
    for top in tops:
        base = os.path.join(root, top)
        for dirpath, _, names in os.walk(base):
            for name in names:
                if name.endswith((".c", ".h")):
                    found.add(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)


def resolve(root, rel, quote, header):
    """The root-relative path the compiler would pick for this include, or None. Quoted
    includes look next to the including file first; both kinds then look in src/ and
    include/ (the library's include path; system headers are not in the tree)."""
    dirs = [os.path.dirname(rel)] if quote == '"' else []
    dirs += ["src", "include"]
    for d in dirs:
        cand = os.path.normpath(os.path.join(d, header)).replace(os.sep, "/")
        if not cand.startswith("..") and os.path.isfile(os.path.join(root, cand)):
            return cand
    return None


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = []
    i = 0
    while i < len(argv):
        if argv[i] == "--root":
            if i + 1 >= len(argv):
                fail_usage("--root needs a folder")
            root = argv[i + 1]
            i += 2
        elif argv[i].startswith("-"):
            fail_usage("unknown option %s (usage: check_layers.py [--root DIR] [FILE...])" % argv[i])
        else:
            files.append(argv[i].replace(os.sep, "/"))
            i += 1
    rows = read_table(root)
    names = [layer for layer, _ in rows]
    order = " < ".join(names)
    problems = []
    for layer, folder in rows:
        if not os.path.isdir(os.path.join(root, folder)):
            problems.append("ARCHITECTURE.md: layer %s's folder %s does not exist" % (layer, folder))
    if not files:
        files = source_files(root, rows)
    n_includes = 0
    for rel in files:
        own = layer_of(rel, rows)
        if own is None:
            problems.append("%s: in no layer of ARCHITECTURE.md's table (add its folder to a row)" % rel)
            continue
        client = not rows[own][1].startswith("src/")
        try:
            text = open(os.path.join(root, rel), encoding="utf-8", errors="replace").read()
        except OSError as e:
            problems.append("%s: cannot read: %s" % (rel, e.strerror))
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            m = INCLUDE_RE.match(line)
            if not m:
                continue
            quote, header = m.group(1), m.group(2)
            target = resolve(root, rel, quote, header)
            if target is None:
                if quote == '"':
                    problems.append('%s:%d: includes "%s", which is not in the tree' % (rel, lineno, header))
                continue  # a system header
            n_includes += 1
            if target.startswith(PUBLIC):
                continue
            theirs = layer_of(target, rows)
            if theirs is None:
                problems.append('%s:%d: includes "%s" (%s), which is in no layer of the table'
                                % (rel, lineno, header, target))
            elif client and theirs != own:
                problems.append('%s:%d: includes "%s" (%s, layer %s): %s/ is a program on the library and '
                                'may include only include/ and its own folder'
                                % (rel, lineno, header, target, names[theirs], rows[own][1].rstrip("/")))
            elif theirs > own:
                problems.append('%s:%d: includes "%s" (%s) of higher layer %s from layer %s (order: %s)'
                                % (rel, lineno, header, target, names[theirs], names[own], order))
    if problems:
        for p in problems:
            sys.stderr.write("check_layers: %s\n" % p)
        sys.stderr.write("check_layers: %d problem%s; the order is ARCHITECTURE.md's layer table\n"
                         % (len(problems), "" if len(problems) == 1 else "s"))
        return 1
    print("check_layers: %d files, %d project includes, all downward (%s)" % (len(files), n_includes, order))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
