/**
 * The browser page in a real browser: Debian's headless Chromium driven by puppeteer-core (no
 * browser download). The page is loaded from `rebasin serve`; the worker must run the wasm backend;
 * weight matching and Sinkhorn-L2 outputs (rebasin checkpoints, plain weights with a spec or their
 * ONNX model) are compared tensor by tensor (bit for bit) with the CLI's on the same backend;
 * without WebAssembly SIMD (simulated) the page says so and aligns on the pure-TS kernels; bad
 * inputs and Cancel leave a message and a usable page. Screenshots of each view go to
 * dist/test-artifacts/. Skipped (with the reason) when Chromium or
 * puppeteer-core is missing: scripts/setup.sh installs both.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/core/random.js';
import { saveCheckpoint } from '../src/io/checkpoint.js';
import { parseSafetensors, serializeSafetensors } from '../src/io/safetensors.js';
import { stateToRecords } from '../src/io/checkpoint.js';
import { mlp } from '../src/models/index.js';
import { specToJSON } from '../src/permutation/spec.js';
import { mergeState } from '../src/state/params.js';
import type { ElementHandle } from 'puppeteer-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
/** The system Chromium: REBASIN_CHROMIUM, else `chromium` or `chromium-browser` on the PATH (Debian's package). */
const CHROMIUM = process.env.REBASIN_CHROMIUM
  ?? (process.env.PATH ?? '').split(delimiter).flatMap((d) => ['chromium', 'chromium-browser'].map((b) => join(d, b))).find((p) => existsSync(p));
const ARTIFACTS = join(ROOT, 'dist', 'test-artifacts');
/** PyTorch weights of an MLP with BatchNorm1d (A and B) and its ONNX export (test/fixtures/import/README.md). */
const FIXTURES = Object.fromEntries(Object.entries({ a: 'mlp_bn1d.safetensors', b: 'mlp_bn1d_b.safetensors', onnx: 'mlp_bn1d.onnx' })
  .map(([k, f]) => [k, join(ROOT, 'test', 'fixtures', 'import', f)])) as { a: string; b: string; onnx: string };

type Puppeteer = typeof import('puppeteer-core');
let puppeteer: Puppeteer | null = null;
try {
  puppeteer = (await import('puppeteer-core')).default as unknown as Puppeteer;
} catch {
  puppeteer = null;
}
let esbuild = true;
try {
  await import('esbuild');
} catch {
  esbuild = false;
}
const skip = !CHROMIUM ? 'Chromium is not installed (apt-get install chromium; scripts/setup.sh does it)'
  : !puppeteer ? 'puppeteer-core is not installed (npm install)' : !esbuild ? 'esbuild is not installed (npm install)' : false;

/** Starts `rebasin serve --port 0` and resolves with its URL. */
function startServer(): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(process.execPath, [CLI, 'serve', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /http:\/\/[^\s]+\//.exec(out);
      if (m) resolve({ url: m[0], proc });
    });
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    proc.on('exit', (code) => reject(new Error(`rebasin serve exited (${code}): ${err}`)));
  });
}

/** Tensors and metadata of a safetensors file; metadata keys naming file paths are left out. */
function contents(bytes: Uint8Array): { tensors: Map<string, { shape: number[]; bytes: Buffer }>; metadata: Record<string, string> } {
  const { tensors, metadata } = parseSafetensors(bytes);
  const t = new Map([...tensors].map(([k, r]) => [k, { shape: r.shape, bytes: Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength) }]));
  const { rebasin_aligned_to: _path, ...rest } = metadata;
  return { tensors: t, metadata: rest };
}

test('browser page: align in the worker on wasm, same tensors as the CLI, errors and Cancel in the page', { skip, timeout: 240_000 }, async () => {
  const built = spawnSync(process.execPath, [join(ROOT, 'scripts', 'build-web.mjs')], { encoding: 'utf8' });
  assert.equal(built.status, 0, built.stderr);
  mkdirSync(ARTIFACTS, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-browser-'));
  const { url, proc } = await startServer();
  const browser = await puppeteer!.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  try {
    // Fixtures: two rebasin checkpoints of one MLP, plain copies of them and their spec, junk.
    const model = mlp({ sizes: [12, 24, 24, 4] });
    const paths: Record<string, string> = {};
    for (const [name, seed] of [['A', 1], ['B', 2]] as const) {
      const state = model.init(new Rng(seed));
      paths[name] = join(dir, `${name}.safetensors`);
      await saveCheckpoint(paths[name], model, state);
      paths[`plain${name}`] = join(dir, `plain${name}.safetensors`);
      writeFileSync(paths[`plain${name}`], serializeSafetensors(stateToRecords(mergeState(state.params, state.buffers)), { dtype: 'F32' }));
    }
    paths.spec = join(dir, 'spec.json');
    writeFileSync(paths.spec, specToJSON(model.permutationSpec()));
    paths.other = join(dir, 'other.safetensors');
    const other = mlp({ sizes: [12, 20, 24, 4] });
    await saveCheckpoint(paths.other, other, other.init(new Rng(3)));
    paths.junk = join(dir, 'junk.safetensors');
    writeFileSync(paths.junk, 'this is not a safetensors file at all');
    paths.junkOnnx = join(dir, 'junk.onnx');
    writeFileSync(paths.junkOnnx, 'this is not an ONNX model either');

    let page = await browser.newPage();
    const consoleErrors: string[] = [];
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.goto(url);
    await page.waitForSelector('#backend[data-backend]');
    assert.equal(await page.$eval('#backend', (e) => (e as HTMLElement).dataset.backend), 'wasm', 'the worker runs the wasm backend');

    const pick = async (id: string, path: string | null) => {
      const input = (await page.$(id)) as ElementHandle<HTMLInputElement>;
      // Clearing a file input: set its files to an empty list and fire change.
      if (path === null) await input.evaluate((e) => { (e as HTMLInputElement).value = ''; e.dispatchEvent(new Event('change')); });
      else await input.uploadFile(path);
    };
    const runAndWait = async (): Promise<'done' | 'error'> => {
      await page.click('#run');
      await page.waitForFunction(() => document.querySelector('#download') || document.querySelector('#error')!.textContent, { timeout: 120_000 });
      return (await page.$('#download')) ? 'done' : 'error';
    };
    const download = async (): Promise<Uint8Array> => {
      const arr = await page.$eval('#download', async (a) => Array.from(new Uint8Array(await (await fetch((a as HTMLAnchorElement).href)).arrayBuffer())));
      return Uint8Array.from(arr);
    };
    let cliRuns = 0;
    const cli = (method: string, extra: string[], a = paths.A, b = paths.B, backend = 'wasm') => {
      const out = join(dir, `cli-${cliRuns++}.safetensors`);
      const r = spawnSync(process.execPath, [CLI, 'align', a, b, '--method', method, ...extra, '-o', out, '--quiet'],
        { encoding: 'utf8', env: { ...process.env, REBASIN_BACKEND: backend } });
      assert.equal(r.status, 0, r.stderr);
      return new Uint8Array(readFileSync(out));
    };
    const sameAsCli = (got: Uint8Array, want: Uint8Array, what: string) => {
      const g = contents(got);
      const w = contents(want);
      assert.deepEqual(g.metadata, w.metadata, `${what}: metadata (besides the path of A)`);
      assert.deepEqual([...g.tensors.keys()], [...w.tensors.keys()], `${what}: tensor names and order`);
      for (const [k, t] of w.tensors) {
        assert.deepEqual(g.tensors.get(k)!.shape, t.shape, `${what}: ${k} shape`);
        assert.ok(g.tensors.get(k)!.bytes.equals(t.bytes), `${what}: ${k} differs from the CLI's output`);
      }
    };

    // Weight matching on rebasin checkpoints (functional equivalence check).
    await pick('#file-a', paths.A);
    await pick('#file-b', paths.B);
    await page.select('#method', 'wm');
    assert.equal(await runAndWait(), 'done', await page.$eval('#error', (e) => e.textContent));
    assert.match(await page.$eval('#equivalence', (e) => e.textContent!), /functional.*OK/);
    assert.ok((await page.$$('#groups tr')).length >= 3, 'a row per permutation group');
    sameAsCli(await download(), cli('wm', []), 'weight matching');
    await page.screenshot({ path: join(ARTIFACTS, 'browser-align-wm.png'), fullPage: true });

    // Sinkhorn-L2 with τ and steps.
    await page.select('#method', 'sinkhorn-l2');
    await page.$eval('#steps', (e) => { (e as HTMLInputElement).value = '15'; });
    await page.$eval('#tau', (e) => { (e as HTMLInputElement).value = '0.5'; });
    assert.equal(await runAndWait(), 'done', await page.$eval('#error', (e) => e.textContent));
    assert.ok((await page.$eval('#cost-plot', (e) => e.innerHTML)).includes('polyline'), 'the cost curve is drawn');
    sameAsCli(await download(), cli('sinkhorn-l2', ['--steps', '15', '--tau', '0.5']), 'Sinkhorn-L2');
    await page.screenshot({ path: join(ARTIFACTS, 'browser-align-sinkhorn.png'), fullPage: true });

    // Plain safetensors: without a spec the page says what is missing; with it, a structural check.
    await page.select('#method', 'wm');
    await pick('#file-a', paths.plainA);
    await pick('#file-b', paths.plainB);
    assert.equal(await runAndWait(), 'error');
    assert.match(await page.$eval('#error', (e) => e.textContent!), /no permutation spec.*spec JSON/);
    await pick('#file-spec', paths.spec);
    assert.equal(await runAndWait(), 'done', await page.$eval('#error', (e) => e.textContent));
    assert.match(await page.$eval('#equivalence', (e) => e.textContent!), /structural.*OK/);
    sameAsCli(await download(), cli('wm', ['--spec', paths.spec], paths.plainA, paths.plainB), 'plain weights + spec');

    // Plain PyTorch weights with their ONNX export as the model definition (as `align --onnx`):
    // the imported graph gives the spec and runs for a functional check; both methods.
    await pick('#file-spec', null);
    await pick('#file-a', FIXTURES.a);
    await pick('#file-b', FIXTURES.b);
    await pick('#file-onnx', FIXTURES.onnx);
    assert.equal(await runAndWait(), 'done', await page.$eval('#error', (e) => e.textContent));
    assert.match(await page.$eval('#equivalence', (e) => e.textContent!), /functional.*OK/);
    sameAsCli(await download(), cli('wm', ['--onnx', FIXTURES.onnx], FIXTURES.a, FIXTURES.b), 'ONNX model + weights, weight matching');
    await page.select('#method', 'sinkhorn-l2');
    await page.$eval('#steps', (e) => { (e as HTMLInputElement).value = '10'; });
    assert.equal(await runAndWait(), 'done', await page.$eval('#error', (e) => e.textContent));
    sameAsCli(await download(), cli('sinkhorn-l2', ['--onnx', FIXTURES.onnx, '--steps', '10', '--tau', '0.5'], FIXTURES.a, FIXTURES.b), 'ONNX model + weights, Sinkhorn-L2');
    await page.screenshot({ path: join(ARTIFACTS, 'browser-align-onnx.png'), fullPage: true });
    await page.select('#method', 'wm');
    // A file that is not ONNX: the CLI's message word for word, nothing offered for download.
    await pick('#file-onnx', paths.junkOnnx);
    assert.equal(await runAndWait(), 'error');
    assert.equal(await page.$('#download'), null);
    const cliJunk = spawnSync(process.execPath, [CLI, 'align', FIXTURES.a, FIXTURES.b, '--onnx', paths.junkOnnx, '-o', join(dir, 'never.safetensors')], { encoding: 'utf8' });
    assert.equal(cliJunk.status, 3, cliJunk.stderr);
    assert.equal(`rebasin align: ${await page.$eval('#error', (e) => e.textContent!)}`, cliJunk.stderr.trim().split(`${dir}/`).join(''));
    await pick('#file-onnx', null);
    await pick('#file-a', paths.plainA);
    await pick('#file-b', paths.plainB);
    await pick('#file-spec', paths.spec);

    // Not a safetensors file: the library's message, nothing offered for download.
    await pick('#file-b', paths.junk);
    assert.equal(await runAndWait(), 'error');
    assert.match(await page.$eval('#error', (e) => e.textContent!), /junk\.safetensors/);
    assert.equal(await page.$('#download'), null);
    await page.screenshot({ path: join(ARTIFACTS, 'browser-error.png'), fullPage: true });

    // A and B of different architectures: the CLI's message.
    await pick('#file-spec', null);
    await pick('#file-a', paths.A);
    await pick('#file-b', paths.other);
    assert.equal(await runAndWait(), 'error');
    const cliOther = spawnSync(process.execPath, [CLI, 'align', paths.A, paths.other, '-o', join(dir, 'never.safetensors')], { encoding: 'utf8' });
    assert.equal(cliOther.status, 3, cliOther.stderr);
    const pageMsg = await page.$eval('#error', (e) => e.textContent!);
    assert.match(pageMsg, /other\.safetensors/);
    // Word for word the CLI's message, which names the files by their full paths.
    assert.equal(`rebasin align: ${pageMsg}`, cliOther.stderr.trim().split(`${dir}/`).join(''));

    // Cancel a long run: a message, no download, and the page still aligns afterwards.
    await pick('#file-a', paths.A);
    await pick('#file-b', paths.B);
    await page.select('#method', 'sinkhorn-l2');
    await page.$eval('#steps', (e) => { (e as HTMLInputElement).value = '100000'; });
    await page.click('#run');
    await page.waitForFunction(() => /step \d+/.test(document.querySelector('#status')!.textContent!), { timeout: 60_000 });
    await page.click('#cancel');
    assert.match(await page.$eval('#status', (e) => e.textContent!), /Cancelled; nothing was downloaded/);
    assert.equal(await page.$('#download'), null);
    await page.select('#method', 'wm');
    await page.waitForSelector('#backend[data-backend]');
    assert.equal(await runAndWait(), 'done', await page.$eval('#error', (e) => e.textContent));

    // The live demo to completion: the curves arrive and alignment lowers the barrier.
    await page.$eval('#demo-epochs', (e) => { (e as HTMLInputElement).value = '2'; });
    await page.click('#demo-run');
    await page.waitForFunction(() => document.querySelector('#demo-barriers') || document.querySelector('#demo-error')!.textContent, { timeout: 180_000 });
    assert.equal(await page.$eval('#demo-error', (e) => e.textContent), '');
    const barriers = await page.$$eval('#demo-barriers tr', (trs) => trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent!)));
    assert.deepEqual(barriers.map((r) => r[0]), ['naive', 'wm', 'sinkhorn-mid']);
    const loss = Object.fromEntries(barriers.map((r) => [r[0], Number(r[1])]));
    for (const v of Object.values(loss)) assert.ok(Number.isFinite(v), `finite barriers: ${JSON.stringify(loss)}`);
    assert.ok(loss.wm < loss.naive && loss['sinkhorn-mid'] < loss.naive, `alignment lowers the loss barrier: ${JSON.stringify(loss)}`);
    // Two panels (loss, accuracy), each with a line per method.
    const plot = await page.$eval('#demo-plot', (e) => e.innerHTML);
    assert.ok((plot.match(/<polyline|<path/g) ?? []).length >= 6, 'a line per method in each panel');
    await page.screenshot({ path: join(ARTIFACTS, 'browser-demo.png'), fullPage: true });

    // A browser without WebAssembly SIMD (Chromium cannot turn it off, so the page's ?simd=off
    // stands in for its feature test): the page says so and aligns on the pure-TypeScript kernels,
    // the same tensors as the CLI with REBASIN_BACKEND=js.
    page = await browser.newPage();
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.goto(`${url}?simd=off`);
    await page.waitForSelector('#backend[data-backend]');
    assert.equal(await page.$eval('#backend', (e) => (e as HTMLElement).dataset.backend), 'js');
    assert.match(await page.$eval('#backend-note', (e) => e.textContent!), /no WebAssembly SIMD.*pure-TypeScript kernels/);
    await pick('#file-a', paths.A);
    await pick('#file-b', paths.B);
    assert.equal(await runAndWait(), 'done', await page.$eval('#error', (e) => e.textContent));
    sameAsCli(await download(), cli('wm', [], paths.A, paths.B, 'js'), 'weight matching on the pure-TS fallback');
    await page.screenshot({ path: join(ARTIFACTS, 'browser-no-simd.png'), fullPage: true });
    assert.deepEqual(consoleErrors, [], 'no uncaught errors in the page');
  } finally {
    await browser.close();
    proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});
