// Builds and runs scripts/exact-lanes.c (native/exact.c's lanes vs its scalar code on every float32
// input) with the addon's compiler flags and erf.ts's table. Needs gcc; ~2 min. Run after `npm run build`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERF_TABLE } from '../dist/src/core/backend/erf.js';

const here = dirname(fileURLToPath(import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'rebasin-exact-'));
try {
  writeFileSync(join(dir, 'erf.bin'), Buffer.from(ERF_TABLE.buffer, ERF_TABLE.byteOffset, ERF_TABLE.byteLength));
  const flags = ['-std=c11', '-O3', '-march=haswell', '-mfma', '-fno-math-errno', '-fno-trapping-math', '-ffp-contract=off', '-Wno-aggressive-loop-optimizations'];
  execFileSync('gcc', [...flags, join(here, 'exact-lanes.c'), '-o', join(dir, 'exact-lanes'), '-lm'], { stdio: 'inherit' });
  execFileSync(join(dir, 'exact-lanes'), [join(dir, 'erf.bin')], { stdio: 'inherit' });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
