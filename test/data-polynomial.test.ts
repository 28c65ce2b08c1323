import { test } from 'node:test';
import assert from 'node:assert/strict';
import { POLYNOMIAL_TASKS, polynomialTask, polynomialTasks } from '../src/data/polynomial.js';

test('polynomial tasks: shapes, domains, residual std ≈ 0.05', () => {
  const tasks = polynomialTasks({ seed: 0 });
  assert.equal(tasks.length, 3);
  tasks.forEach((ds, t) => {
    const spec = POLYNOMIAL_TASKS[(t + 1) as 1 | 2 | 3];
    assert.equal(ds.n, 100);
    assert.deepEqual(ds.sampleShape, [1]);
    assert.ok(ds.y instanceof Float32Array);
    assert.equal(ds.y.length, 100);
    const [a, b] = spec.domain;
    assert.ok(Math.abs(ds.x[0] - a) < 1e-6 && Math.abs(ds.x[99] - b) < 1e-6, 'linspace includes both ends');
    for (let i = 1; i < 100; i++) assert.ok(Math.abs(ds.x[i] - ds.x[i - 1] - (b - a) / 99) < 1e-5);
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < 100; i++) {
      const r = ds.y[i] - spec.f(ds.x[i]);
      s += r;
      s2 += r * r;
    }
    const std = Math.sqrt(s2 / 100 - (s / 100) ** 2);
    assert.ok(Math.abs(std - 0.05) < 0.015, `task ${t + 1}: residual std ${std}`);
    assert.ok(Math.abs(s / 100) < 0.02, `task ${t + 1}: residual mean ${s / 100}`);
  });
  // Spot values of the clean functions.
  assert.equal(POLYNOMIAL_TASKS[1].f(-3), 0);
  assert.equal(POLYNOMIAL_TASKS[2].f(1), 1);
  assert.equal(POLYNOMIAL_TASKS[3].f(4), 1);
});

test('polynomial tasks: seeded noise, uniform sampling option, noise-free option', () => {
  assert.deepEqual(polynomialTask(2, { seed: 4 }).y, polynomialTask(2, { seed: 4 }).y);
  assert.notDeepEqual(polynomialTask(2, { seed: 4 }).y, polynomialTask(2, { seed: 5 }).y);
  const u = polynomialTask(3, { sampling: 'uniform', seed: 1, n: 500 });
  assert.equal(u.n, 500);
  for (const v of u.x) assert.ok(v >= 2 && v < 4);
  const clean = polynomialTask(1, { noise: 0 });
  for (let i = 0; i < clean.n; i++) assert.equal(clean.y[i], Math.fround(clean.x[i] + 3));
  assert.throws(() => polynomialTask(4 as 1), /task must be/);
});
