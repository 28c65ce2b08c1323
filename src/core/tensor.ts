/**
 * Tensors and reverse-mode autodiff.
 *
 * A Tensor is a packed row-major array with a shape (no strided views: every op writes a fresh,
 * contiguous result, which keeps kernels simple and makes the data safe to hand to C). Ops that run
 * while gradients are enabled and see an input that requires grad record a node: the inputs and a
 * backward function mapping the output gradient to input gradients. `backward()` walks those
 * nodes in reverse topological order. Nothing else holds the graph, so dropping the loss frees it.
 */
import type { FloatArray } from './backend/types.js';
import { kernels } from './backend/index.js';
import type { Rng } from './random.js';

export type DType = 'float32' | 'float64';
export type Shape = readonly number[];

interface GradNode {
  op: string;
  inputs: Tensor[];
  /** Maps the output gradient to one gradient (same size as the input) or null per input. */
  backward: (grad: FloatArray) => (FloatArray | null)[];
}

let gradEnabled = true;

/** Runs `fn` without recording gradients (evaluation, in-place parameter updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Number of elements of a shape; the empty shape (a scalar) has one. */
export function numel(shape: Shape): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function allocLike(dtype: DType, n: number): FloatArray {
  return dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
}

/** Below this many bytes a zeroed array costs next to nothing; above it the zeroing pass shows. */
const UNINIT_MIN_BYTES = 1 << 16;

/**
 * An array whose contents are unspecified, for outputs a kernel overwrites entirely (gemm with
 * beta = 0, conv, pooling, elementwise): it skips the zero-fill that `new Float32Array` does,
 * which is one full extra pass over every large activation and gradient of a training step.
 * Never use it for a buffer that is accumulated into.
 */
export function allocUninit(dtype: DType, n: number): FloatArray {
  const bytes = n * (dtype === 'float64' ? 8 : 4);
  if (bytes < UNINIT_MIN_BYTES) return allocLike(dtype, n);
  // Node's Buffer can skip the zeroing; a browser (the page's worker) has only zeroed arrays.
  if (typeof Buffer === 'undefined') return allocLike(dtype, n);
  const buf = Buffer.allocUnsafeSlow(bytes);
  return dtype === 'float64' ? new Float64Array(buf.buffer, buf.byteOffset, n) : new Float32Array(buf.buffer, buf.byteOffset, n);
}

export class Tensor {
  readonly shape: readonly number[];
  data: FloatArray;
  /** Accumulated gradient of a leaf after backward(). */
  grad: Tensor | null = null;
  requiresGrad: boolean;
  /** The op that produced this tensor (null for leaves and for results computed without grad). */
  node: GradNode | null = null;

  constructor(data: FloatArray, shape: Shape, requiresGrad = false) {
    for (const s of shape) {
      if (!Number.isInteger(s) || s < 0) throw new Error(`Tensor: invalid shape ${shapeStr(shape)}`);
    }
    if (data.length !== numel(shape)) {
      throw new Error(`Tensor: data has ${data.length} elements but shape ${shapeStr(shape)} needs ${numel(shape)}`);
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.requiresGrad = requiresGrad;
  }

  get dtype(): DType {
    return this.data instanceof Float64Array ? 'float64' : 'float32';
  }

  get size(): number {
    return this.data.length;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) throw new Error(`item(): tensor has shape ${shapeStr(this.shape)}, not one element`);
    return this.data[0];
  }

  /** A leaf copy sharing nothing with this tensor's graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape, false);
  }

  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape, false);
  }

  /** Marks this tensor as a trainable leaf. */
  requireGrad(flag = true): this {
    if (this.node) throw new Error('requireGrad(): only leaf tensors can be marked trainable');
    this.requiresGrad = flag;
    return this;
  }

  toArray(): number[] {
    return Array.from(this.data);
  }

  toString(): string {
    return `Tensor(${shapeStr(this.shape)}, ${this.dtype}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  /** Back-propagates from this scalar (or from `grad` for a non-scalar) into every leaf's .grad. */
  backward(grad?: Tensor): void {
    backward(this, grad);
  }
}

// ---------------------------------------------------------------- creation

export function tensor(values: ArrayLike<number> | FloatArray, shape?: Shape, dtype: DType = 'float32'): Tensor {
  const data = dtype === 'float64' ? Float64Array.from(values as ArrayLike<number>) : Float32Array.from(values as ArrayLike<number>);
  return new Tensor(data, shape ?? [data.length]);
}

export function scalar(v: number, dtype: DType = 'float32'): Tensor {
  return tensor([v], [], dtype);
}

export function zeros(shape: Shape, dtype: DType = 'float32'): Tensor {
  return new Tensor(allocLike(dtype, numel(shape)), shape);
}

export function ones(shape: Shape, dtype: DType = 'float32'): Tensor {
  return full(shape, 1, dtype);
}

export function full(shape: Shape, value: number, dtype: DType = 'float32'): Tensor {
  const t = zeros(shape, dtype);
  t.data.fill(value);
  return t;
}

export function eye(n: number, dtype: DType = 'float32'): Tensor {
  const t = zeros([n, n], dtype);
  for (let i = 0; i < n; i++) t.data[i * n + i] = 1;
  return t;
}

export function randn(shape: Shape, rng: Rng, std = 1, dtype: DType = 'float32'): Tensor {
  const t = zeros(shape, dtype);
  rng.fillNormal(t.data, 0, std);
  return t;
}

export function rand(shape: Shape, rng: Rng, lo = 0, hi = 1, dtype: DType = 'float32'): Tensor {
  const t = zeros(shape, dtype);
  rng.fillUniform(t.data, lo, hi);
  return t;
}

/** Converts a tensor's data to another dtype (a leaf; for tests and I/O). */
export function cast(t: Tensor, dtype: DType): Tensor {
  if (t.dtype === dtype) return t;
  const out = allocLike(dtype, t.size);
  out.set(t.data);
  return new Tensor(out, t.shape);
}

// ---------------------------------------------------------------- op recording

/**
 * Builds an op's result: records the backward function when gradients are enabled and some input
 * requires grad. This is also the public way to define an op with its own backward (the implicit
 * Sinkhorn gradient is one): compute the forward data yourself, then call
 * `makeResult(name, shape, data, inputs, grad => [gradForInput0, ...])`.
 */
export function makeResult(op: string, shape: Shape, data: FloatArray, inputs: Tensor[],
  backwardFn: (grad: FloatArray) => (FloatArray | null)[]): Tensor {
  const out = new Tensor(data, shape);
  if (gradEnabled && inputs.some((t) => t.requiresGrad)) {
    out.requiresGrad = true;
    out.node = { op, inputs, backward: backwardFn };
  }
  return out;
}

/** A user-defined differentiable op: `forward` computes the output; `backward` the input gradients. */
export function defineOp<I extends Tensor[]>(name: string, impl: {
  forward: (...inputs: I) => { data: FloatArray; shape: Shape };
  backward: (grad: FloatArray, output: FloatArray, ...inputs: I) => (FloatArray | null)[];
}): (...inputs: I) => Tensor {
  return (...inputs: I) => {
    const { data, shape } = impl.forward(...inputs);
    if (data.length !== numel(shape)) throw new Error(`${name}: forward returned ${data.length} values for shape ${shapeStr(shape)}`);
    return makeResult(name, shape, data, inputs, (g) => {
      const grads = impl.backward(g, data, ...inputs);
      grads.forEach((gi, i) => {
        if (gi && gi.length !== inputs[i].size) {
          throw new Error(`${name}: backward returned ${gi.length} values for input ${i} of shape ${shapeStr(inputs[i].shape)}`);
        }
      });
      return grads;
    });
  };
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS: deep graphs (long unrolled loops) must not overflow the stack.
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.node ? t.node.inputs : [];
    if (i < inputs.length) {
      top[1]++;
      const child = inputs[i];
      if (child.requiresGrad && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

export function backward(root: Tensor, grad?: Tensor): void {
  if (!root.requiresGrad) throw new Error('backward(): the tensor does not require grad (no trainable input reached it)');
  let seed: FloatArray;
  if (grad) {
    if (grad.ndim !== root.ndim || grad.shape.some((d, i) => d !== root.shape[i])) throw new Error(`backward(): gradient shape ${shapeStr(grad.shape)} does not match ${shapeStr(root.shape)}`);
    seed = allocLike(root.dtype, root.size);
    seed.set(grad.data);
  } else {
    if (root.size !== 1) throw new Error(`backward(): a gradient is needed for non-scalar output ${shapeStr(root.shape)}`);
    seed = allocLike(root.dtype, 1);
    seed[0] = 1;
  }
  const order = topoOrder(root);
  const grads = new Map<Tensor, FloatArray>();
  // An op may hand back its output gradient buffer (reshape) or the same buffer for two inputs
  // (add); buffers stored in `grads` are accumulated into, so each must have a single owner.
  const owned = new Set<FloatArray>();
  grads.set(root, seed);
  owned.add(seed);
  const k = kernels();
  for (let idx = order.length - 1; idx >= 0; idx--) {
    const t = order[idx];
    const g = grads.get(t);
    if (!g) continue;
    grads.delete(t); // free as we go: peak memory is the live frontier, not the whole graph
    owned.delete(g);
    if (!t.node) {
      if (t.grad) k.axpy(1, g, t.grad.data);
      else t.grad = new Tensor(g, t.shape);
      continue;
    }
    const inGrads = t.node.backward(g);
    const inputs = t.node.inputs;
    for (let i = 0; i < inputs.length; i++) {
      const gi = inGrads[i];
      const inp = inputs[i];
      if (!gi || !inp.requiresGrad) continue;
      const prev = grads.get(inp);
      if (prev) k.axpy(1, gi, prev);
      else {
        const mine = owned.has(gi) ? gi.slice() : gi;
        grads.set(inp, mine);
        owned.add(mine);
      }
    }
  }
}

/** Clears .grad of the given tensors. */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) p.grad = null;
}
