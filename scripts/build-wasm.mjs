// Builds native/wasm/rebasin.wasm (the wasm backend's kernels) from native/wasm/kernels.c with clang
// and lld (Debian: apt-get install clang lld). The built file is committed, so installs without
// clang still have the wasm backend; run this (npm run build:wasm) after changing the C sources.
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'native', 'wasm', 'rebasin.wasm');
const clang = process.env.CLANG ?? 'clang';
const args = [
  '--target=wasm32', '-nostdlib', '-ffreestanding', '-msimd128', '-O3', '-std=c11',
  '-fno-math-errno', '-fno-trapping-math', '-ffp-contract=off', '-fvisibility=hidden',
  '-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-unused-function',
  '-I', join(root, 'native', 'wasm', 'include'),
  '-Wl,--no-entry', '-Wl,--export-dynamic', '-Wl,--export=__heap_base', '-Wl,-z,stack-size=1048576',
  '-Wl,--strip-all',
  '-o', out, join(root, 'native', 'wasm', 'kernels.c'),
];
const r = spawnSync(clang, args, { stdio: 'inherit' });
if (r.error || r.status !== 0) {
  console.error(`build-wasm: ${clang} failed${r.error ? ` (${r.error.message})` : ''}; install clang and lld (apt-get install -y clang lld)`);
  process.exit(1);
}
console.log(`build-wasm: ${out} (${statSync(out).size} bytes)`);
