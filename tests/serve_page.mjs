// serve_page.mjs - the playground page of a running `damo serve` in headless Chromium (Debian's
// chromium driven by npm playwright-core): loads the page, waits until it has asked the server
// what the model is, then for a picture classifier uploads a picture (and also draws one), for
// a text model pastes a mail, for GPT-2 types a prompt and waits for the streamed completion;
// prints what the page shows as JSON and saves a screenshot. tests/test_serve.c compares the
// shown label / text with the server's API answers for the same input.
//   node tests/serve_page.mjs URL SCREENSHOT.png [PICTURE.png | MAIL.txt | PROMPT]
import fs from 'fs';
import os from 'os';
import path from 'path';
import { createRequire } from 'module';

const npm = process.env.DAMO_NPM_DIR || path.join(os.homedir(), '.cache/damo/npm');
const require = createRequire(path.join(npm, 'package.json'));
const { chromium } = require('playwright-core');

const [url, screenshot, input] = process.argv.slice(2);
const executablePath = process.env.DAMO_CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
const out = {};
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 20000 });
  out.kind = await page.getAttribute('body', 'data-kind');
  out.header = await page.textContent('#model');
  if (out.kind === 'gpt2') {
    await page.fill('#prompt', input);
    await page.fill('#max-tokens', '12');
    await page.fill('#temperature', '0');
    await page.click('#generate');
    await page.waitForSelector('#completion[data-done="1"]', { timeout: 30000 });
    const full = await page.textContent('#completion');
    out.completion = full.slice(input.length);
    out.stats = await page.textContent('#gen-stats');
  } else if (await page.isVisible('#image-panel')) {
    // a stroke drawn with the mouse first (the canvas path), then the uploaded picture
    const box = await page.locator('#canvas').boundingBox();
    await page.mouse.move(box.x + 80, box.y + 60);
    await page.mouse.down();
    for (let i = 0; i <= 10; i++) await page.mouse.move(box.x + 80 + i * 12, box.y + 60 + i * 16);
    await page.mouse.up();
    await page.click('#classify-image');
    await page.waitForSelector('#image-result[data-label]', { timeout: 20000 });
    out.drawn = await page.getAttribute('#image-result', 'data-label');
    await page.evaluate(() => { delete document.getElementById('image-result').dataset.label; });
    await page.setInputFiles('#file', input);
    await page.waitForFunction(() => document.querySelector('#canvas') && window.getComputedStyle(document.body));
    await page.waitForTimeout(300); // the FileReader and the preview
    await page.click('#classify-image');
    await page.waitForSelector('#image-result[data-label]', { timeout: 20000 });
    out.label = await page.getAttribute('#image-result', 'data-label');
    out.bars = await page.locator('#image-result .bar').count();
  } else {
    await page.fill('#mail', fs.readFileSync(input, 'utf8'));
    await page.click('#classify-text');
    await page.waitForSelector('#text-result[data-label]', { timeout: 20000 });
    out.label = await page.getAttribute('#text-result', 'data-label');
    out.bars = await page.locator('#text-result .bar').count();
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  out.errors = errors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
