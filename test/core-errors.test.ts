/** Error paths: messages name the op and the offending shapes/values, so users can find their bug. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsBackend, nativeBackend, setBackend } from '../src/core/backend/index.js';
import * as F from '../src/core/ops/index.js';
import { AdamW, clipGradValue, SGD } from '../src/core/optim/optimizers.js';
import { Rng } from '../src/core/random.js';
import { defineOp, scalar, Tensor, zeros } from '../src/core/tensor.js';

setBackend(jsBackend);

const t = (shape: number[], requiresGrad = false) => zeros(shape, 'float64').requireGrad(requiresGrad);

test('binary ops: incompatible broadcast names the op and both shapes', () => {
  for (const [name, op] of [['add', F.add], ['sub', F.sub], ['mul', F.mul], ['div', F.div], ['max', F.maximum]] as const) {
    assert.throws(() => op(t([2, 3]), t([4])), new RegExp(`${name}.*\\[2, 3\\].*\\[4\\]`));
    assert.throws(() => op(t([2, 3, 4]), t([3, 2, 4])), new RegExp(`${name}.*\\[2, 3, 4\\].*\\[3, 2, 4\\]`));
  }
  assert.throws(() => F.add(t([2]), zeros([2], 'float32')), /add.*dtypes differ.*float64.*float32/);
});

test('matmul and linear: mismatched shapes name both', () => {
  assert.throws(() => F.matmul(t([2, 3]), t([4, 5])), /matmul.*\[2, 3\].*\[4, 5\]/);
  assert.throws(() => F.matmul(t([2, 2, 3]), t([3, 3, 5])), /matmul.*\[2, 2, 3\].*\[3, 3, 5\]/);
  assert.throws(() => F.matmul(t([4]), t([3, 2])), /matmul.*\[4\].*\[3, 2\]/);
  assert.throws(() => F.matmul(t([2, 2, 2, 3]), t([3, 3, 5])), /matmul.*\[2, 2, 2, 3\].*\[3, 3, 5\]/);
  assert.throws(() => F.matmul(t([2, 3]), zeros([3, 2], 'float32')), /matmul.*dtypes/);
  assert.throws(() => F.linear(t([5, 3]), t([4, 2])), /linear.*\[5, 3\].*\[4, 2\]/);
  assert.throws(() => F.linear(t([5, 3]), t([4, 3]), t([3])), /linear.*bias.*\[3\].*4/);
  assert.throws(() => F.linear(t([5, 3]), t([4, 3, 1])), /linear.*\[4, 3, 1\]/);
});

test('conv2d and pooling: bad shapes and geometry', () => {
  assert.throws(() => F.conv2d(t([1, 3, 5, 5]), t([2, 2, 3, 3])), /conv2d.*\[1, 3, 5, 5\].*\[2, 2, 3, 3\]/);
  assert.throws(() => F.conv2d(t([3, 5, 5]), t([2, 3, 3, 3])), /conv2d.*\[3, 5, 5\]/);
  assert.throws(() => F.conv2d(t([1, 3, 5, 5]), t([2, 3, 3, 3]), t([3])), /conv2d.*bias.*\[3\]/);
  assert.throws(() => F.conv2d(t([1, 1, 2, 2]), t([1, 1, 3, 3])), /conv2d.*3×3.*2×2/);
  assert.throws(() => F.conv2d(t([1, 1, 4, 4]), t([1, 1, 3, 3]), null, { stride: 0 }), /conv2d.*stride/);
  assert.throws(() => F.maxPool2d(t([1, 4, 4]), 2), /maxPool2d.*\[1, 4, 4\]/);
  assert.throws(() => F.avgPool2d(t([1, 1, 2, 2]), 3), /avgPool2d.*3.*2×2/);
  assert.throws(() => F.maxPool2d(t([1, 1, 4, 4]), 2, 2, 2), /maxPool2d.*padding 2/);
  assert.throws(() => F.adaptiveAvgPool2d(t([4, 4]), 2), /adaptiveAvgPool2d.*\[4, 4\]/);
});

test('bad axes name the op, the axis and the rank', () => {
  const x = t([2, 3]);
  assert.throws(() => F.sum(x, 2), /sum: axis 2 .*2-d/);
  assert.throws(() => F.sum(x, [0, -3]), /sum: axis -3/);
  assert.throws(() => F.mean(x, 5), /mean: axis 5/);
  assert.throws(() => F.max(x, 2), /max: axis 2/);
  assert.throws(() => F.logsumexp(x, -3), /logsumexp: axis -3/);
  assert.throws(() => F.softmax(x, 2), /logsumexp: axis 2/);
  assert.throws(() => F.sum(x, 0.5), /sum: axis 0.5/);
  assert.throws(() => F.permute(x, [0, 0]), /permute.*\[0, 0\].*\[2, 3\]/);
  assert.throws(() => F.permute(x, [0]), /permute/);
  assert.throws(() => F.permute(x, [0, 2]), /permute/);
  assert.throws(() => F.transpose(t([3])), /transpose: axis -2/);
  assert.throws(() => F.slice(x, 1, 2, 4), /slice.*\[2, 4\).*length 3/);
  assert.throws(() => F.slice(x, 1, 2, 1), /slice/);
  assert.throws(() => F.slice(x, 3, 0, 1), /slice: axis 3/);
  assert.throws(() => F.concat([x, t([3, 2])], 1), /concat.*\[2, 3\].*\[3, 2\]/);
  assert.throws(() => F.concat([], 0), /concat/);
  assert.throws(() => F.indexSelect(x, 1, [0, 3]), /indexSelect: index 3 .*length 3/);
  assert.throws(() => F.indexSelect(x, 1, [-1]), /indexSelect: index -1/);
  assert.throws(() => F.flatten(x, 2), /flatten: axis 2/);
});

test('reshape: incompatible sizes and bad -1 inference', () => {
  assert.throws(() => F.reshape(t([2, 3]), [4, 2]), /reshape.*\[2, 3\].*\[4, 2\]/);
  assert.throws(() => F.reshape(t([2, 3]), [4, -1]), /reshape.*-1.*\[4, -1\]/);
  assert.throws(() => F.reshape(t([2, 3]), [-1, -1]), /reshape.*\[-1, -1\]/);
  assert.throws(() => F.reshape(t([2, 3]), [-2, -3]), /reshape.*\[-2, -3\]/);
});

test('losses: labels out of range, wrong counts, shape mismatches', () => {
  const logits = t([3, 4], true);
  assert.throws(() => F.crossEntropy(logits, Int32Array.from([0, 4, 1])), /label 4.*\[0, 4\)/);
  assert.throws(() => F.crossEntropy(logits, Int32Array.from([0, -1, 1])), /label -1/);
  assert.throws(() => F.crossEntropy(logits, Int32Array.from([0, 1])), /crossEntropy: 2 labels for 3 rows/);
  assert.throws(() => F.crossEntropy(t([3]), Int32Array.from([0, 1, 2])), /crossEntropy.*\[3\]/);
  assert.throws(() => F.mse(t([2, 3]), t([3, 3])), /mse.*\[2, 3\].*\[3, 3\]/);
});

// The label check lives in the kernel: the native one must throw too, never read out of bounds.
test('crossEntropy rejects out-of-range labels on the native backend too', { skip: nativeBackend() ? false : 'native backend not available' }, () => {
  const prev = setBackend(nativeBackend()!);
  try {
    const logits = zeros([3, 4]);
    assert.throws(() => F.crossEntropy(logits, Int32Array.from([0, 4, 1])), /label 4.*\[0, 4\)/);
    assert.throws(() => F.crossEntropy(logits, Int32Array.from([-1, 0, 1])), /label -1/);
  } finally {
    setBackend(prev);
  }
});

test('batchNorm and dropout: bad shapes and options', () => {
  assert.throws(() => F.batchNorm(t([3]), null, null, null, { training: true }), /batchNorm.*\[3\]/);
  assert.throws(() => F.batchNorm(t([2, 3]), t([4]), null, null, { training: true }), /batchNorm: weight \[4\].*3 channels/);
  assert.throws(() => F.batchNorm(t([1, 3]), null, null, null, { training: true }), /batchNorm.*more than one value/);
  assert.throws(() => F.dropout(t([2]), 1, new Rng(0), true), /dropout: p/);
  assert.throws(() => F.dropout(t([2]), -0.1, new Rng(0), true), /dropout: p/);
});

test('backward: non-scalar without a gradient, nothing trainable, wrong gradient shape', () => {
  const x = t([2, 3], true);
  assert.throws(() => F.relu(x).backward(), /backward.*non-scalar.*\[2, 3\]/);
  assert.throws(() => F.relu(t([2])).backward(), /does not require grad/);
  assert.throws(() => F.relu(x).backward(t([3, 2, 1])), /backward.*\[3, 2, 1\].*\[2, 3\]/);
  assert.throws(() => F.relu(x).requireGrad(), /requireGrad.*leaf/);
});

test('tensor construction and item()', () => {
  assert.throws(() => new Tensor(new Float32Array(5), [2, 3]), /5 elements.*\[2, 3\].*6/);
  assert.throws(() => new Tensor(new Float32Array(0), [-1, 0]), /invalid shape \[-1, 0\]/);
  assert.throws(() => t([2]).item(), /item.*\[2\]/);
  assert.equal(scalar(3).item(), 3);
});

test('defineOp: forward/backward returning the wrong number of values', () => {
  const badFwd = defineOp('badFwd', { forward: (x: Tensor) => ({ data: new Float64Array(3), shape: x.shape }), backward: (g) => [g] });
  assert.throws(() => badFwd(t([2], true)), /badFwd: forward returned 3 values for shape \[2\]/);
  const badBwd = defineOp('badBwd', { forward: (x: Tensor) => ({ data: x.data.slice(), shape: x.shape }), backward: () => [new Float64Array(5)] });
  assert.throws(() => F.sum(badBwd(t([2], true))).backward(), /badBwd: backward returned 5 values for input 0 of shape \[2\]/);
});

test('optimisers reject bad options and bad parameters', () => {
  const p = () => [t([2], true)];
  assert.throws(() => new SGD(p(), { lr: -0.1 }), /SGD: learning rate.*-0.1/);
  assert.throws(() => new SGD(p(), { lr: NaN }), /SGD: learning rate/);
  assert.throws(() => new SGD(p(), { lr: Infinity }), /SGD: learning rate/);
  assert.throws(() => new SGD(p(), { lr: 0.1, momentum: -0.5 }), /SGD: momentum/);
  assert.throws(() => new SGD(p(), { lr: 0.1, weightDecay: -1 }), /SGD: .*weightDecay/);
  assert.throws(() => new SGD(p(), { lr: 0.1, nesterov: true }), /SGD: nesterov/);
  assert.throws(() => new SGD(p(), { lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true }), /SGD: nesterov/);
  assert.throws(() => new AdamW(p(), { lr: -1 }), /AdamW: learning rate/);
  assert.throws(() => new AdamW(p(), { betas: [1, 0.999] }), /AdamW: betas.*\[1, 0.999\]/);
  assert.throws(() => new AdamW(p(), { betas: [0.9, -0.1] }), /AdamW: betas/);
  assert.throws(() => new AdamW(p(), { eps: -1e-8 }), /AdamW: eps/);
  assert.throws(() => new AdamW(p(), { weightDecay: -0.01 }), /AdamW: weightDecay/);
  assert.throws(() => new AdamW([t([2])]), /AdamW: parameter 0 .*does not require grad/);
  assert.throws(() => new SGD([F.relu(t([2], true))], { lr: 0.1 }), /SGD: parameter 0 .*not a leaf/);
  assert.throws(() => clipGradValue(p(), 0), /clipGradValue: clip must be > 0/);
});

test('optimiser setState rejects state of another shape', () => {
  const o = new AdamW([t([2], true), t([3], true)]);
  const s = o.getState();
  assert.throws(() => new AdamW([t([2], true)]).setState(s), /AdamW.setState: state has 2 parameters, optimiser has 1/);
  assert.throws(() => new AdamW([t([2], true), t([4], true)]).setState(s), /AdamW.setState: buffer for parameter 1 has 3 values, expected 4/);
  const sgd = new SGD([t([2], true)], { lr: 0.1, momentum: 0.9 });
  assert.throws(() => sgd.setState({ step: 1, buffers: [[[1, 2], [3, 4]]] }), /SGD.setState: parameter 0 has 2 buffers, expected 1/);
  assert.throws(() => sgd.setState({ step: 1, paramSteps: [1, 1], buffers: [[[1, 2]]] }), /SGD.setState: .*2 step counts.*1 parameters/);
  // A rejected state leaves the optimiser as it was.
  assert.equal(sgd.getState().step, 0);
});

test('solve refuses non-finite systems on every backend, naming the position', async () => {
  for (const k of [jsBackend.kernels, nativeBackend()?.kernels ?? null].filter((x) => x !== null)) {
    const A = Float32Array.from([1, 2, 3, 4]);
    A[2] = NaN;
    assert.throws(() => k!.solve(2, 1, A, Float32Array.from([1, 1])), /solve: .*non-finite value \(NaN\) at row 1, column 0/);
    assert.throws(() => k!.solve(2, 1, Float64Array.from([1, 0, 0, 1]), Float64Array.from([Infinity, 1])), /right-hand side has a non-finite value \(Infinity\) at row 0/);
  }
});
