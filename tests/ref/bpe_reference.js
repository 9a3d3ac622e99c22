#!/usr/bin/env node
// bpe_reference.js - the reference GPT-2 ids (npm gpt-3-encoder) of each file named on the
// command line, one line per file: FILE<TAB>ids (space separated), the format of
// `damo tokenize --tokenizer gpt2 FILE...`. Files are read as UTF-8, as damo reads them.
//   node tests/ref/bpe_reference.js FILE...
// The encoder is looked for in $GPT3_ENCODER_DIR, else ~/.cache/damo/npm/node_modules/gpt-3-encoder.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const dir = process.env.GPT3_ENCODER_DIR ||
  path.join(os.homedir(), '.cache/damo/npm/node_modules/gpt-3-encoder');
const { encode } = require(path.join(dir, 'Encoder.js'));

// The reference's encode() appends with Array.concat, quadratic in the tokens of one
// call (the whole novel would take hours), so a long text is handed to it in chunks of
// about 4 KB, cut just before a space that follows a non-space character. Such a cut is
// always a boundary between two pieces of GPT-2's pattern, and no piece before it looks
// past it (the only lookahead belongs to whitespace runs), so the ids are those of
// encode(whole text).
function encodeLong(text) {
  const ids = [];
  let start = 0;
  while (start < text.length) {
    let cut = Math.min(start + 4096, text.length);
    while (cut < text.length && !(text[cut] === ' ' && /\S/u.test(text[cut - 1]))) cut++;
    for (const id of encode(text.slice(start, cut))) ids.push(id);
    start = cut;
  }
  return ids;
}

const started = process.hrtime.bigint();
let tokens = 0;
const out = [];
for (const file of process.argv.slice(2)) {
  const ids = process.env.BPE_REFERENCE_WHOLE ? encode(fs.readFileSync(file, 'utf8')) : encodeLong(fs.readFileSync(file, 'utf8'));
  tokens += ids.length;
  out.push(file + '\t' + ids.join(' ') + '\n');
}
process.stdout.write(out.join(''));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
process.stderr.write(`bpe_reference.js: ${process.argv.length - 2} files, ${tokens} tokens, ${seconds.toFixed(3)} s\n`);
