// serve_openai.mjs - OpenAI's official JavaScript client (npm `openai`, unchanged) against a
// running `damo serve` of a GPT-2 model: models.list, completions and chat completions, whole
// and streamed, and an error surfacing as the client's APIError. tests/test_serve.c starts the
// server, runs this and compares what it prints with the server's own greedy completion.
//   node tests/serve_openai.mjs http://127.0.0.1:PORT/v1 PROMPT MAX_TOKENS
// Prints one JSON object; exits 0 when every call went through (the C test checks the texts).
import os from 'os';
import path from 'path';
import { createRequire } from 'module';

const npm = process.env.DAMO_NPM_DIR || path.join(os.homedir(), '.cache/damo/npm');
const require = createRequire(path.join(npm, 'package.json'));
const { default: OpenAI } = await import(require.resolve('openai'));

const [baseURL, prompt, maxTokensText] = process.argv.slice(2);
const maxTokens = Number(maxTokensText);
const client = new OpenAI({ baseURL, apiKey: 'not-needed', maxRetries: 0, timeout: 60000 });
const out = {};

const models = await client.models.list();
out.model = models.data[0].id;
const model = out.model;

// ignore_eos is damo's (and llama.cpp's) extension: the client passes unknown fields through
const whole = await client.completions.create({ model, prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true });
out.completion = whole.choices[0].text;
out.finish = whole.choices[0].finish_reason;
out.usage = whole.usage;

let streamed = '';
let chunks = 0;
const stream = await client.completions.create({ model, prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true,
  stream: true });
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.text ?? '';
  chunks++;
}
out.streamed = streamed;
out.chunks = chunks;

const chat = await client.chat.completions.create({ model, max_tokens: 8, temperature: 0,
  messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: prompt }] });
out.chat = chat.choices[0].message.content;
out.chat_role = chat.choices[0].message.role;

let chatStreamed = '';
const chatStream = await client.chat.completions.create({ model, max_tokens: 8, temperature: 0, stream: true,
  messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: prompt }] });
for await (const chunk of chatStream) chatStreamed += chunk.choices[0]?.delta?.content ?? '';
out.chat_streamed = chatStreamed;

try {
  await client.completions.create({ model, prompt, max_tokens: 4, n: 2 });
  out.error = 'none';
} catch (e) {
  out.error = e instanceof OpenAI.APIError ? `${e.status} ${e.message}` : `not an APIError: ${e}`;
}
console.log(JSON.stringify(out));
