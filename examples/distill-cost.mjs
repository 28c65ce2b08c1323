// A custom objective for `rebasin align --method sinkhorn --cost examples/distill-cost.mjs`:
// distillation at the midpoint. The model halfway between A and the permuted B should predict
// what the two endpoints predict together (the average of their softmax outputs), measured by
// the cross-entropy of the midpoint's log-softmax against that target. Needs --data (the
// inputs it distils on) and a model definition (a rebasin checkpoint, --model-config or --onnx).
//
// The function gets { alignedB, a, batch, step, forward, F } (see src/methods/custom-cost.ts):
// alignedB holds B's tensors under the current soft permutation and is differentiable; forward
// runs the model on any tensors; F is rebasin's tensor ops. It returns a scalar tensor.
export default function distillAtMidpoint({ alignedB, a, batch, forward, F }) {
  if (!batch) throw new Error('distill-cost: needs --data');
  const mid = new Map();
  for (const [name, t] of a) mid.set(name, F.add(F.mulScalar(t, 0.5), F.mulScalar(alignedB.get(name), 0.5)));
  // The target: the endpoints' averaged predictions (constants: B's own outputs do not depend on
  // the permutation, so the un-permuted B can stand in for alignedB here).
  const target = F.mulScalar(F.add(F.softmax(forward(a, batch.x), -1), F.softmax(forward(alignedB, batch.x), -1)), 0.5).detach();
  const logp = F.logSoftmax(forward(mid, batch.x), -1);
  return F.neg(F.mean(F.sum(F.mul(target, logp), -1)));
}
