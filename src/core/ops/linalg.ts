/** Matrix products: matmul (plain and batched) and the fused Linear layer, over BLAS gemm. */
import { kernels } from '../backend/index.js';
import type { FloatArray } from '../backend/types.js';
import { allocLike, allocUninit, makeResult, numel, shapeStr, Tensor } from '../tensor.js';
import { expand, reshape } from './shape.js';

/**
 * Matrix product with NumPy / ONNX MatMul semantics: a [..., m, k] @ b [..., k, n] with the
 * leading (batch) dims broadcast against each other; a 1-D a is a row [1, k] and a 1-D b a column
 * [k, 1], that axis dropped from the result. An operand without batch dims (or whose batch dims
 * are all 1) is shared over the batch (stride 0); one broadcast over some batch axes only is
 * expanded first.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.dtype !== b.dtype) throw new Error(`matmul: dtypes differ (${a.dtype} and ${b.dtype})`);
  if (a.ndim === 0 || b.ndim === 0) throw new Error(`matmul: expects operands of at least 1 dim, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  if (a.shape[a.ndim - 1] !== b.shape[Math.max(0, b.ndim - 2)]) {
    throw new Error(`matmul: shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} do not chain`);
  }
  if (a.ndim === 1 || b.ndim === 1) {
    const r = matmul(a.ndim === 1 ? reshape(a, [1, a.shape[0]]) : a, b.ndim === 1 ? reshape(b, [b.shape[0], 1]) : b);
    const [m, n] = r.shape.slice(-2);
    return reshape(r, [...r.shape.slice(0, -2), ...(a.ndim === 1 ? [] : [m]), ...(b.ndim === 1 ? [] : [n])]);
  }
  if (a.ndim > 3 || b.ndim > 3 || (a.ndim === 3 && b.ndim === 3 && a.shape[0] !== b.shape[0])) return matmulBroadcast(a, b);
  return matmul3(a, b);
}

function matmulBroadcast(a: Tensor, b: Tensor): Tensor {
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const nd = Math.max(batchA.length, batchB.length);
  const batch: number[] = [];
  for (let i = 0; i < nd; i++) {
    const da = batchA[batchA.length - nd + i] ?? 1;
    const db = batchB[batchB.length - nd + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`matmul: shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} do not chain`);
    batch.push(da === 1 ? db : da);
  }
  if (k !== k2) throw new Error(`matmul: shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} do not chain`);
  const B = numel(batch);
  const as3 = (t: Tensor, batchT: number[], r: number, c: number): Tensor => {
    if (numel(batchT) === 1) return reshape(t, [r, c]);
    if (numel(batchT) === B) return reshape(t, [B, r, c]);
    return reshape(expand(t, [...batch, r, c]), [B, r, c]);
  };
  const out = matmul3(as3(a, batchA, m, k), as3(b, batchB, k, n));
  return reshape(out, [...batch, m, n]);
}

/** a: [m, k] or [B, m, k]; b: [k, n] or [B, k, n] (the same B). */
function matmul3(a: Tensor, b: Tensor): Tensor {
  if (a.ndim < 2 || a.ndim > 3 || b.ndim < 2 || b.ndim > 3) {
    throw new Error(`matmul: expects 2-D or 3-D operands, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  }
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  const batchA = a.ndim === 3 ? a.shape[0] : 1;
  const batchB = b.ndim === 3 ? b.shape[0] : 1;
  if (k !== k2 || (a.ndim === 3 && b.ndim === 3 && batchA !== batchB)) {
    throw new Error(`matmul: shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} do not chain`);
  }
  const batch = Math.max(batchA, batchB);
  const batched = a.ndim === 3 || b.ndim === 3;
  const shape = batched ? [batch, m, n] : [m, n];
  const sA = a.ndim === 3 ? m * k : 0;
  const sB = b.ndim === 3 ? k * n : 0;
  const out = allocUninit(a.dtype, batch * m * n);
  const K = kernels();
  if (batched) K.gemmStrided(false, false, m, n, k, 1, a.data, 0, sA, b.data, 0, sB, 0, out, 0, m * n, batch);
  else K.gemm(false, false, m, n, k, 1, a.data, 0, k, b.data, 0, n, 0, out, 0, n);
  return makeResult('matmul', shape, out, [a, b], (g) => {
    let ga: FloatArray | null = null;
    let gb: FloatArray | null = null;
    if (a.requiresGrad) {
      // dA = G Bᵀ; a shared 2-D A accumulates over the batch.
      // The last branch accumulates over the batch, so only it needs a zeroed array.
      ga = !batched || sA ? allocUninit(a.dtype, a.size) : allocLike(a.dtype, a.size);
      if (!batched) K.gemm(false, true, m, k, n, 1, g, 0, n, b.data, 0, n, 0, ga, 0, k);
      else if (sA) K.gemmStrided(false, true, m, k, n, 1, g, 0, m * n, b.data, 0, sB, 0, ga, 0, m * k, batch);
      else for (let i = 0; i < batch; i++) K.gemm(false, true, m, k, n, 1, g, i * m * n, n, b.data, i * sB, n, 1, ga, 0, k);
    }
    if (b.requiresGrad) {
      // dB = Aᵀ G.
      gb = allocUninit(a.dtype, b.size);
      if (!batched) K.gemm(true, false, k, n, m, 1, a.data, 0, k, g, 0, n, 0, gb, 0, n);
      else if (sB) K.gemmStrided(true, false, k, n, m, 1, a.data, 0, sA, g, 0, m * n, 0, gb, 0, k * n, batch);
      // Shared 2-D B under a batched A: packed [B, m, k] rows stack into one [B·m, k] matrix.
      else K.gemm(true, false, k, n, batch * m, 1, a.data, 0, k, g, 0, n, 0, gb, 0, n);
    }
    return [ga, gb];
  });
}

/**
 * PyTorch Linear: y = x Wᵀ + b with W [out, in], x [..., in]. Fused so the forward is one gemm
 * and the backward skips dX when x needs no gradient (the input layer).
 */
export function linear(x: Tensor, w: Tensor, b?: Tensor | null): Tensor {
  if (w.ndim !== 2) throw new Error(`linear: weight must be [out, in], got ${shapeStr(w.shape)}`);
  const [outF, inF] = w.shape;
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== inF) {
    throw new Error(`linear: input ${shapeStr(x.shape)} does not end in ${inF} features (weight ${shapeStr(w.shape)})`);
  }
  if (b && (b.ndim !== 1 || b.shape[0] !== outF)) throw new Error(`linear: bias ${shapeStr(b.shape)} does not match ${outF} outputs`);
  if (x.dtype !== w.dtype) throw new Error(`linear: dtypes differ (${x.dtype} and ${w.dtype})`);
  const N = numel(x.shape.slice(0, -1));
  const shape = [...x.shape.slice(0, -1), outF];
  const out = allocUninit(x.dtype, N * outF);
  const K = kernels();
  if (b) for (let i = 0; i < N; i++) out.set(b.data, i * outF);
  K.gemm(false, true, N, outF, inF, 1, x.data, 0, inF, w.data, 0, inF, b ? 1 : 0, out, 0, outF);
  const inputs = b ? [x, w, b] : [x, w];
  return makeResult('linear', shape, out, inputs, (g) => {
    let gx: FloatArray | null = null;
    let gw: FloatArray | null = null;
    let gbias: FloatArray | null = null;
    if (x.requiresGrad) {
      gx = allocUninit(x.dtype, x.size);
      K.gemm(false, false, N, inF, outF, 1, g, 0, outF, w.data, 0, inF, 0, gx, 0, inF);
    }
    if (w.requiresGrad) {
      gw = allocUninit(x.dtype, w.size);
      K.gemm(true, false, outF, inF, N, 1, g, 0, outF, x.data, 0, inF, 0, gw, 0, inF);
    }
    if (b && b.requiresGrad) {
      gbias = allocLike(x.dtype, outF);
      K.sumAxis(g, 1, N, outF, gbias);
    }
    return b ? [gx, gw, gbias] : [gx, gw];
  });
}
