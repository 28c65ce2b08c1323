/**
 * The wasm backend: the kernels of native/wasm/kernels.c compiled to wasm32 + SIMD128
 * (native/wasm/rebasin.wasm, committed; `npm run build:wasm` rebuilds it with clang and lld).
 * It runs wherever WebAssembly SIMD does: in Node when the native addon cannot load, and in the
 * browser page's worker.
 *
 * Each call copies its Float32Array arguments into the module's linear memory (grown as needed,
 * never shrunk), runs the C kernel and copies the outputs back. Kernels whose cost is dominated by
 * that copy, or not worth porting (solve, gather/scatter, axis reductions, pooling), run in the JS
 * kernels, as does every kernel on Float64Array arguments; which is which derives from the object
 * `wasmKernels` returns.
 */
import { jsKernels } from './js.js';
import {
  KERNEL_TABLE, type Backend, type BinaryOp, type ConvGeometry, type FloatArray, type KernelName, type Kernels, type UnaryOp,
} from './types.js';

/** The order of the C enums rb_unary and rb_binary (native/rb.h, shared by both C builds); the backend tests run every op against js.ts. */
const UNARY_CODES: readonly UnaryOp[] = ['neg', 'exp', 'log', 'relu', 'tanh', 'sigmoid', 'sqrt', 'abs', 'square'];
const BINARY_CODES: readonly BinaryOp[] = ['add', 'sub', 'mul', 'div', 'max', 'min'];

type Ptr = number;

/** The module's exports (pointers are byte offsets into its memory). */
interface WasmExports {
  memory: WebAssembly.Memory;
  __heap_base: WebAssembly.Global;
  rb_gemm(ta: number, tb: number, M: number, N: number, K: number, alpha: number, A: Ptr, lda: number, B: Ptr, ldb: number,
    beta: number, C: Ptr, ldc: number): void;
  rb_gemm_strided(ta: number, tb: number, M: number, N: number, K: number, alpha: number, A: Ptr, sA: number, B: Ptr, sB: number,
    beta: number, C: Ptr, sC: number, count: number): void;
  rb_conv_fwd(x: Ptr, w: Ptr, bias: Ptr, out: Ptr, g: Ptr, relu: number, col: Ptr): void;
  rb_conv_bwd(x: Ptr, w: Ptr, dy: Ptr, reluY: Ptr, dx: Ptr, dw: Ptr, db: Ptr, g: Ptr, col: Ptr, dym: Ptr): void;
  rb_logsumexp(x: Ptr, outer: number, len: number, inner: number, out: Ptr, scratch: Ptr): void;
  rb_sinkhorn(P: Ptr, batch: number, m: number, n: number, iters: number, logA: Ptr, logB: Ptr, scratch: Ptr): void;
  rb_unary(op: number, x: Ptr, out: Ptr, n: number): void;
  rb_binary(op: number, a: Ptr, aStr: Ptr, b: Ptr, bStr: Ptr, out: Ptr, shape: Ptr, nd: number, idx: Ptr): void;
  rb_copy_strided(x: Ptr, strides: Ptr, out: Ptr, shape: Ptr, nd: number, idx: Ptr): void;
  rb_axpy(alpha: number, x: Ptr, y: Ptr, n: number): void;
  rb_affine(x: Ptr, alpha: number, beta: number, out: Ptr, n: number): void;
  rb_relu_backward(x: Ptr, dy: Ptr, dx: Ptr, n: number): void;
  rb_sum_squares(x: Ptr, n: number): number;
  rb_softmax_ce(logits: Ptr, labels: Ptr, N: number, C: number, probs: Ptr): number;
  rb_adamw(param: Ptr, grad: Ptr, m: Ptr, v: Ptr, n: number, beta1: number, beta2: number, eps: number,
    stepSize: number, bc2Sqrt: number, decay: number): void;
  rb_sgd(param: Ptr, grad: Ptr, buf: Ptr, n: number, lr: number, momentum: number, dampening: number,
    nesterov: number, wd: number, first: number): void;
}

/** Every function the module must export. */
const REQUIRED_EXPORTS = [
  'rb_gemm', 'rb_gemm_strided', 'rb_conv_fwd', 'rb_conv_bwd', 'rb_logsumexp', 'rb_sinkhorn', 'rb_unary', 'rb_binary',
  'rb_copy_strided', 'rb_axpy', 'rb_affine', 'rb_relu_backward', 'rb_sum_squares', 'rb_softmax_ce', 'rb_adamw', 'rb_sgd',
] as const satisfies readonly (keyof WasmExports)[];

/**
 * A bump allocator over the module's memory above __heap_base, reset at the start of each kernel
 * call. Growing the memory detaches the old views, so they are re-taken after every growth.
 */
class Heap {
  private readonly base: number;
  private top: number;
  f32: Float32Array;
  i32: Int32Array;
  /** Bytes copied in and out since creation (the bench reports the copy share). */
  copiedBytes = 0;

  constructor(private readonly memory: WebAssembly.Memory, heapBase: number) {
    this.base = (heapBase + 15) & ~15;
    this.top = this.base;
    this.f32 = new Float32Array(memory.buffer);
    this.i32 = new Int32Array(memory.buffer);
  }

  reset(): void {
    this.top = this.base;
  }

  /** Room for n 4-byte elements, 16-byte aligned; returns the byte offset. */
  alloc(n: number): Ptr {
    const p = this.top;
    this.top = p + ((n * 4 + 15) & ~15);
    if (this.top > this.memory.buffer.byteLength) {
      const pages = Math.ceil((this.top - this.memory.buffer.byteLength) / 65536);
      try {
        this.memory.grow(pages);
      } catch {
        throw new RangeError(`wasm backend: cannot grow memory to ${(this.top / 2 ** 20).toFixed(0)} MiB (wasm32 is limited to 4 GiB; use the native backend for larger work)`);
      }
      this.f32 = new Float32Array(this.memory.buffer);
      this.i32 = new Int32Array(this.memory.buffer);
    }
    return p;
  }

  /** Copies src[start, start+n) in; returns its offset. */
  put(src: FloatArray, start: number, n: number): Ptr {
    const p = this.alloc(n);
    if (n > 0) {
      this.f32.set(start === 0 && src.length === n ? src : src.subarray(start, start + n), p >> 2);
      this.copiedBytes += n * 4;
    }
    return p;
  }

  putNullable(src: FloatArray | null, n: number): Ptr {
    return src ? this.put(src, 0, n) : 0;
  }

  putInts(src: ArrayLike<number>): Ptr {
    const p = this.alloc(src.length);
    for (let i = 0; i < src.length; i++) this.i32[(p >> 2) + i] = src[i];
    return p;
  }

  /** Copies n floats at p out to dst[start, start+n). */
  get(p: Ptr, dst: FloatArray, start: number, n: number): void {
    if (n === 0) return;
    dst.set(this.f32.subarray(p >> 2, (p >> 2) + n), start);
    this.copiedBytes += n * 4;
  }
}

function need(a: FloatArray | Int32Array, end: number, kernel: string, arg: string): void {
  if (end > a.length) throw new RangeError(`${kernel}: ${arg} has ${a.length} elements, needs ${end}`);
}

/** Lowest and highest offsets (relative) a strided view of `shape` touches. */
function extent(strides: readonly number[], shape: readonly number[]): { lo: number; hi: number } {
  let lo = 0;
  let hi = 0;
  for (let d = 0; d < shape.length; d++) {
    const span = (shape[d] - 1) * strides[d];
    if (span < 0) lo += span;
    else hi += span;
  }
  return { lo, hi };
}

function geometry(h: Heap, g: ConvGeometry): Ptr {
  return h.putInts([g.N, g.C, g.H, g.W, g.O, g.KH, g.KW, g.stride, g.pad, g.OH, g.OW]);
}

/** The kernels the module serves, over Float32Array arguments. */
function wasmKernels(x: WasmExports, h: Heap): Partial<Kernels> {
  return {
    gemm(ta, tb, M, N, K, alpha, A, aOff, lda, B, bOff, ldb, beta, C, cOff, ldc) {
      if (M === 0 || N === 0) return;
      const spanA = K === 0 ? 0 : ta ? (K - 1) * lda + M : (M - 1) * lda + K;
      const spanB = K === 0 ? 0 : tb ? (N - 1) * ldb + K : (K - 1) * ldb + N;
      const spanC = (M - 1) * ldc + N;
      need(A, aOff + spanA, 'gemm', 'A');
      need(B, bOff + spanB, 'gemm', 'B');
      need(C, cOff + spanC, 'gemm', 'C');
      h.reset();
      const pA = h.put(A, aOff, spanA);
      const pB = h.put(B, bOff, spanB);
      // C's gaps between rows (ldc > N) are copied back too, so they must be copied in.
      const pC = beta !== 0 || ldc !== N ? h.put(C, cOff, spanC) : h.alloc(spanC);
      x.rb_gemm(+ta, +tb, M, N, K, alpha, pA, lda, pB, ldb, beta, pC, ldc);
      h.get(pC, C, cOff, spanC);
    },
    gemmStrided(ta, tb, M, N, K, alpha, A, aOff, sA, B, bOff, sB, beta, C, cOff, sC, count) {
      if (count === 0 || M === 0 || N === 0) return;
      const spanA = (count - 1) * sA + M * K;
      const spanB = (count - 1) * sB + K * N;
      const spanC = (count - 1) * sC + M * N;
      need(A, aOff + spanA, 'gemmStrided', 'A');
      need(B, bOff + spanB, 'gemmStrided', 'B');
      need(C, cOff + spanC, 'gemmStrided', 'C');
      h.reset();
      const pA = h.put(A, aOff, spanA);
      const pB = h.put(B, bOff, spanB);
      const pC = beta !== 0 || sC !== M * N ? h.put(C, cOff, spanC) : h.alloc(spanC);
      x.rb_gemm_strided(+ta, +tb, M, N, K, alpha, pA, sA, pB, sB, beta, pC, sC, count);
      h.get(pC, C, cOff, spanC);
    },
    logsumexp(src, outer, len, inner, out) {
      const n = outer * len * inner;
      need(src, n, 'logsumexp', 'x');
      need(out, outer * inner, 'logsumexp', 'out');
      h.reset();
      const px = h.put(src, 0, n);
      const po = h.alloc(outer * inner);
      const scratch = h.alloc(4 * inner);
      x.rb_logsumexp(px, outer, len, inner, po, scratch);
      h.get(po, out, 0, outer * inner);
    },
    sinkhornLog(logP, batch, m, n, iters, logA, logB) {
      const size = batch * m * n;
      if (size === 0 || iters === 0) return;
      need(logP, size, 'sinkhornLog', 'logP');
      if (logA) need(logA, m, 'sinkhornLog', 'logA');
      if (logB) need(logB, n, 'sinkhornLog', 'logB');
      h.reset();
      const pP = h.put(logP, 0, size);
      const pA = h.putNullable(logA, m);
      const pB = h.putNullable(logB, n);
      const scratch = h.alloc(6 * n);
      x.rb_sinkhorn(pP, batch, m, n, iters, pA, pB, scratch);
      h.get(pP, logP, 0, size);
    },
    unary(op, src, out) {
      const code = UNARY_CODES.indexOf(op);
      if (code < 0) throw new Error(`unary: unknown op ${op as string}`);
      const n = src.length;
      need(out, n, 'unary', 'out');
      h.reset();
      const px = h.put(src, 0, n);
      x.rb_unary(code, px, px, n);
      h.get(px, out, 0, n);
    },
    binary(op, a, aStrides, b, bStrides, out, shape) {
      const code = BINARY_CODES.indexOf(op);
      if (code < 0) throw new Error(`binary: unknown op ${op as string}`);
      let total = 1;
      for (const s of shape) total *= s;
      if (total === 0) return;
      if (shape.length === 0) { jsKernels.binary(op, a, aStrides, b, bStrides, out, shape); return; }
      const ea = extent(aStrides, shape);
      const eb = extent(bStrides, shape);
      need(a, ea.hi + 1, 'binary', 'a');
      need(b, eb.hi + 1, 'binary', 'b');
      need(out, total, 'binary', 'out');
      if (ea.lo < 0 || eb.lo < 0) { jsKernels.binary(op, a, aStrides, b, bStrides, out, shape); return; }
      h.reset();
      const pa = h.put(a, 0, ea.hi + 1);
      const pb = h.put(b, 0, eb.hi + 1);
      const po = h.alloc(total);
      const nd = shape.length;
      x.rb_binary(code, pa, h.putInts(aStrides), pb, h.putInts(bStrides), po, h.putInts(shape), nd, h.alloc(nd));
      h.get(po, out, 0, total);
    },
    copyStrided(src, offset, strides, out, shape) {
      let total = 1;
      for (const s of shape) total *= s;
      if (total === 0) return;
      if (shape.length === 0) { out[0] = src[offset]; return; }
      const e = extent(strides, shape);
      if (offset + e.lo < 0) throw new RangeError(`copyStrided: the view starts before x (offset ${offset + e.lo})`);
      need(src, offset + e.hi + 1, 'copyStrided', 'x');
      need(out, total, 'copyStrided', 'out');
      h.reset();
      const px = h.put(src, offset + e.lo, e.hi - e.lo + 1);
      const po = h.alloc(total);
      const nd = shape.length;
      x.rb_copy_strided(px - 4 * e.lo, h.putInts(strides), po, h.putInts(shape), nd, h.alloc(nd));
      h.get(po, out, 0, total);
    },
    axpy(alpha, src, y) {
      const n = src.length;
      need(y, n, 'axpy', 'y');
      h.reset();
      const px = h.put(src, 0, n);
      const py = h.put(y, 0, n);
      x.rb_axpy(alpha, px, py, n);
      h.get(py, y, 0, n);
    },
    affine(src, alpha, beta, out) {
      const n = src.length;
      need(out, n, 'affine', 'out');
      h.reset();
      const px = h.put(src, 0, n);
      x.rb_affine(px, alpha, beta, px, n);
      h.get(px, out, 0, n);
    },
    reluBackward(src, dy, dx) {
      const n = src.length;
      need(dy, n, 'reluBackward', 'dy');
      need(dx, n, 'reluBackward', 'dx');
      h.reset();
      const px = h.put(src, 0, n);
      const pd = h.put(dy, 0, n);
      x.rb_relu_backward(px, pd, pd, n);
      h.get(pd, dx, 0, n);
    },
    sumSquares(src) {
      h.reset();
      return x.rb_sum_squares(h.put(src, 0, src.length), src.length);
    },
    conv2dForward(src, w, bias, out, g, relu = false) {
      const K = g.C * g.KH * g.KW;
      const L = g.OH * g.OW;
      const nx = g.N * g.C * g.H * g.W;
      const no = g.N * g.O * L;
      need(src, nx, 'conv2dForward', 'x');
      need(w, g.O * K, 'conv2dForward', 'w');
      if (bias) need(bias, g.O, 'conv2dForward', 'bias');
      need(out, no, 'conv2dForward', 'out');
      h.reset();
      const px = h.put(src, 0, nx);
      const pw = h.put(w, 0, g.O * K);
      const pb = h.putNullable(bias, g.O);
      const po = h.alloc(no);
      const pg = geometry(h, g);
      const col = h.alloc(K * L);
      x.rb_conv_fwd(px, pw, pb, po, pg, relu ? 1 : 0, col);
      h.get(po, out, 0, no);
    },
    conv2dBackward(src, w, dy, dx, dw, db, g, reluOut = null) {
      const K = g.C * g.KH * g.KW;
      const L = g.OH * g.OW;
      const nx = g.N * g.C * g.H * g.W;
      const no = g.N * g.O * L;
      need(src, nx, 'conv2dBackward', 'x');
      need(w, g.O * K, 'conv2dBackward', 'w');
      need(dy, no, 'conv2dBackward', 'dy');
      if (reluOut) need(reluOut, no, 'conv2dBackward', 'reluOut');
      h.reset();
      const px = h.put(src, 0, nx);
      const pw = h.put(w, 0, g.O * K);
      const pdy = h.put(dy, 0, no);
      const pr = h.putNullable(reluOut, no);
      const pdx = dx ? h.alloc(nx) : 0;
      const pdw = dw ? h.alloc(g.O * K) : 0;
      const pdb = db ? h.alloc(g.O) : 0;
      const pg = geometry(h, g);
      const col = h.alloc(K * L);
      const dym = h.alloc(g.O * L);
      x.rb_conv_bwd(px, pw, pdy, pr, pdx, pdw, pdb, pg, col, dym);
      if (dx) h.get(pdx, dx, 0, nx);
      if (dw) h.get(pdw, dw, 0, g.O * K);
      if (db) h.get(pdb, db, 0, g.O);
    },
    softmaxCrossEntropy(logits, labels, N, C, probs) {
      need(logits, N * C, 'softmaxCrossEntropy', 'logits');
      need(labels, N, 'softmaxCrossEntropy', 'labels');
      need(probs, N * C, 'softmaxCrossEntropy', 'probs');
      for (let n = 0; n < N; n++) {
        const y = labels[n];
        if (!(y >= 0 && y < C)) throw new RangeError(`softmaxCrossEntropy: label ${y} of sample ${n} is outside [0, ${C})`);
      }
      h.reset();
      const pl = h.put(logits, 0, N * C);
      const py = h.putInts(labels.subarray(0, N));
      const pp = h.alloc(N * C);
      const loss = x.rb_softmax_ce(pl, py, N, C, pp);
      h.get(pp, probs, 0, N * C);
      return loss;
    },
    adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step) {
      const n = param.length;
      need(grad, n, 'adamw', 'grad');
      need(m, n, 'adamw', 'm');
      need(v, n, 'adamw', 'v');
      h.reset();
      const pp = h.put(param, 0, n);
      const pg = h.put(grad, 0, n);
      const pm = h.put(m, 0, n);
      const pv = h.put(v, 0, n);
      x.rb_adamw(pp, pg, pm, pv, n, beta1, beta2, eps, lr / (1 - Math.pow(beta1, step)),
        Math.sqrt(1 - Math.pow(beta2, step)), 1 - lr * weightDecay);
      h.get(pp, param, 0, n);
      h.get(pm, m, 0, n);
      h.get(pv, v, 0, n);
    },
    sgd(param, grad, buf, lr, momentum, dampening, nesterov, weightDecay, first) {
      const n = param.length;
      need(grad, n, 'sgd', 'grad');
      if (momentum !== 0) need(buf, n, 'sgd', 'buf');
      h.reset();
      const pp = h.put(param, 0, n);
      const pg = h.put(grad, 0, n);
      const pb = momentum !== 0 ? h.put(buf, 0, n) : 0;
      x.rb_sgd(pp, pg, pb, n, lr, momentum, dampening, nesterov ? 1 : 0, weightDecay, first ? 1 : 0);
      h.get(pp, param, 0, n);
      if (momentum !== 0) h.get(pb, buf, 0, n);
    },
  };
}

type AnyKernel = (...args: unknown[]) => unknown;

/** A loaded module: the backend, its heap (copiedBytes for the bench) and which kernels run in wasm. */
export type WasmLoad = { backend: Backend; heap: { copiedBytes: number }; served: KernelName[] } | { error: string };

/**
 * Instantiates the module from its bytes (synchronously: Node, or a browser worker) and returns the
 * backend, or why it cannot run (no WebAssembly, no SIMD, a stale module). Never throws.
 */
export function instantiateWasm(bytes: BufferSource, source: string): WasmLoad {
  if (typeof WebAssembly !== 'object') return { error: 'this JavaScript engine has no WebAssembly' };
  let inst: WebAssembly.Instance;
  try {
    inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
  } catch (e) {
    const msg = (e as Error).message;
    const simd = /simd|v128|invalid value type|opcode/i.test(msg) ? ' (this engine seems to lack WebAssembly SIMD)' : '';
    return { error: `the wasm kernels (${source}) failed to compile${simd}: ${msg}` };
  }
  const ex = inst.exports as unknown as WasmExports;
  const missing = REQUIRED_EXPORTS.filter((k) => typeof ex[k] !== 'function');
  if (missing.length > 0) return { error: `the wasm module ${source} is out of date (missing ${missing.join(', ')}); run npm run build:wasm` };
  const heap = new Heap(ex.memory, ex.__heap_base.value as number);
  const served = wasmKernels(ex, heap);
  const names = Object.keys(served) as KernelName[];
  const out: Partial<Record<KernelName, AnyKernel>> = {};
  for (const name of Object.keys(KERNEL_TABLE) as KernelName[]) {
    const fallback = jsKernels[name] as AnyKernel;
    const impl = served[name] as AnyKernel | undefined;
    const at = KERNEL_TABLE[name];
    if (!impl) { out[name] = fallback; continue; }
    if (at === 'all') throw new Error(`wasm backend: ${name} serves every dtype natively, which the wasm kernels do not`);
    out[name] = (...args) => (args[at] instanceof Float32Array ? impl(...args) : fallback(...args));
  }
  const backend: Backend = {
    name: 'wasm',
    kernels: out as Kernels,
    info: {
      blasThreads: 0,
      detail: `WebAssembly SIMD128 kernels (${source}, ${names.length} of ${Object.keys(KERNEL_TABLE).length} kernels; the rest in TypeScript), single-threaded`,
      sgemm: null,
      allocatorTuned: false,
    },
  };
  return { backend, heap, served: names };
}
