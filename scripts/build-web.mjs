// Builds the browser page into dist/web: esbuild bundles web/main.ts (the page) and web/worker.ts
// (the library in a Web Worker) from the library's own source; index.html and the wasm kernels
// are copied next to them. `rebasin serve` serves that folder.
import { copyFileSync, mkdirSync } from 'node:fs';
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
console.log(`build-web: ${out}`);
