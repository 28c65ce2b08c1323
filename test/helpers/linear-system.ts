/**
 * Recorded linear systems (test/fixtures/*.f32.gz: int32 n, then A (n×n row-major) and b (n) as
 * float32, gzipped) — systems that broke a solver once — and the check a least-squares answer must pass.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

export function readRecordedSystem(file: string): { n: number; A: Float32Array; b: Float32Array } {
  const here = dirname(fileURLToPath(import.meta.url));
  const raw = gunzipSync(readFileSync(resolve(here, '../../../test/fixtures', file)));
  const n = raw.readInt32LE(0);
  const at = (offset: number, length: number) => new Float32Array(raw.buffer.slice(raw.byteOffset + offset, raw.byteOffset + offset + 4 * length));
  return { n, A: at(4, n * n), b: at(4 + 4 * n * n, n) };
}

/** ‖Aᵀ(Ax − b)‖ / ‖Aᵀb‖: zero for any least-squares solution, in float64. */
export function normalEquationResidual(A: Float32Array, x: ArrayLike<number>, b: Float32Array, n: number): number {
  const r = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = -b[i];
    for (let j = 0; j < n; j++) s += A[i * n + j] * x[j];
    r[i] = s;
  }
  let num = 0;
  let den = 0;
  for (let j = 0; j < n; j++) {
    let g = 0;
    let h = 0;
    for (let i = 0; i < n; i++) { g += A[i * n + j] * r[i]; h += A[i * n + j] * b[i]; }
    num += g * g;
    den += h * h;
  }
  return Math.sqrt(num / den);
}
