// The page's live demo at 5 epochs in headless Chromium (README, "The browser page"): prints the
// page's status line and barrier table and writes the screenshot docs/browser-demo.png.
//
//   npm run build && node scripts/page-demo.mjs [EPOCHS]
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const epochs = process.argv[2] ?? '5';
const chromium = process.env.REBASIN_CHROMIUM
  ?? (process.env.PATH ?? '').split(delimiter).flatMap((d) => ['chromium', 'chromium-browser'].map((b) => join(d, b))).find((p) => existsSync(p));
if (!chromium) {
  console.error('page-demo: no chromium on the PATH (apt-get install chromium, or set REBASIN_CHROMIUM)');
  process.exit(2);
}
const server = spawn(process.execPath, [join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'serve', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((resolve) => {
  let out = '';
  server.stdout.on('data', (d) => { out += d; const m = /http:\/\/[^\s]+\//.exec(out); if (m) resolve(m[0]); });
});
const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1000, height: 900 });
  await page.goto(url);
  await page.$eval('#demo-epochs', (e, v) => { e.value = v; }, epochs);
  await page.click('#demo-run');
  await page.waitForFunction(() => document.querySelector('#demo-barriers') || document.querySelector('#demo-error').textContent, { timeout: 600_000 });
  const error = await page.$eval('#demo-error', (e) => e.textContent);
  if (error) throw new Error(`the page reports: ${error}`);
  console.log(await page.$eval('#demo-status', (e) => e.textContent));
  console.log(await page.$$eval('#demo-barriers tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td,th')].map((td) => td.textContent).join(' | ')).join('\n')));
  await page.screenshot({ path: join(ROOT, 'docs', 'browser-demo.png'), fullPage: true });
} finally {
  await browser.close();
  server.kill();
}
