// Builds the OpenBLAS addon with node-gyp during `npm install`. A failed build is not fatal:
// rebasin then runs on its pure-TypeScript backend and says so once at start-up.
import { spawnSync } from 'node:child_process';

if (process.env.REBASIN_SKIP_NATIVE === '1') {
  console.warn('rebasin: REBASIN_SKIP_NATIVE=1, native addon not built');
  process.exit(0);
}
const r = spawnSync('node-gyp', ['rebuild'], { stdio: 'inherit', shell: process.platform === 'win32' });
if (r.status !== 0) {
  console.warn('rebasin: native addon build failed (is libopenblas-dev installed?); the pure-TypeScript backend will be used.');
}
process.exit(0);
