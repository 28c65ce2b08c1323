import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linearSumAssignment, permutationFromAssignment, type Assignment } from '../src/permutation/assignment.js';
import { Rng } from '../src/core/random.js';

/** Best total over every way of matching min(rows, cols) pairs; ±Infinity when none is finite. */
function bruteForce(cost: ArrayLike<number>, rows: number, cols: number, maximize: boolean): number {
  const tr = rows > cols;
  const n = tr ? cols : rows;
  const m = tr ? rows : cols;
  const at = (i: number, j: number) => (tr ? cost[j * cols + i] : cost[i * cols + j]);
  const used = new Uint8Array(m);
  let best = maximize ? -Infinity : Infinity;
  const rec = (i: number, sum: number): void => {
    if (i === n) {
      if (Number.isFinite(sum) && (maximize ? sum > best : sum < best)) best = sum;
      return;
    }
    for (let j = 0; j < m; j++) {
      if (used[j]) continue;
      used[j] = 1;
      rec(i + 1, sum + at(i, j));
      used[j] = 0;
    }
  };
  rec(0, 0);
  return best;
}

/** The pairs are a valid matching: sorted rows, distinct rows and columns, right count and total. */
function checkStructure(a: Assignment, cost: ArrayLike<number>, rows: number, cols: number): void {
  const k = Math.min(rows, cols);
  assert.equal(a.rowInd.length, k);
  assert.equal(a.colInd.length, k);
  const seenCol = new Uint8Array(cols);
  let sum = 0;
  for (let t = 0; t < k; t++) {
    const r = a.rowInd[t];
    const c = a.colInd[t];
    assert.ok(r >= 0 && r < rows && c >= 0 && c < cols, `pair ${t} (${r}, ${c}) out of range`);
    if (t > 0) assert.ok(r > a.rowInd[t - 1], 'rows must be strictly increasing');
    assert.equal(seenCol[c], 0, `column ${c} used twice`);
    seenCol[c] = 1;
    sum += cost[r * cols + c];
  }
  assert.ok(Math.abs(sum - a.total) <= 1e-9 * (1 + Math.abs(sum)), `total ${a.total} vs sum of pairs ${sum}`);
}

/**
 * Independent optimality certificate from the returned duals (minimisation form after flipping
 * signs for maximize): u_i + v_j ≤ c_ij everywhere, equality on the pairs, and on the larger side
 * potentials ≤ 0 with 0 on unmatched indices. Infinite costs are forbidden pairs and impose nothing.
 */
function checkDuals(a: Assignment, cost: ArrayLike<number>, rows: number, cols: number, maximize: boolean, tol: number): void {
  const s = maximize ? -1 : 1;
  const { u, v } = a;
  assert.equal(u.length, rows);
  assert.equal(v.length, cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const c = s * cost[i * cols + j];
      if (c === Infinity) continue;
      const slack = c - s * (u[i] + v[j]);
      if (slack < -tol) assert.fail(`dual infeasible at (${i}, ${j}): slack ${slack}`);
    }
  }
  let dualObj = 0;
  for (let t = 0; t < a.rowInd.length; t++) {
    const i = a.rowInd[t];
    const j = a.colInd[t];
    const slack = s * cost[i * cols + j] - s * (u[i] + v[j]);
    assert.ok(Math.abs(slack) <= tol, `complementary slackness fails at (${i}, ${j}): slack ${slack}`);
  }
  const matchedRow = new Uint8Array(rows);
  const matchedCol = new Uint8Array(cols);
  for (let t = 0; t < a.rowInd.length; t++) {
    matchedRow[a.rowInd[t]] = 1;
    matchedCol[a.colInd[t]] = 1;
  }
  const checkSide = (p: Float64Array, matched: Uint8Array, name: string) => {
    for (let k = 0; k < p.length; k++) {
      const q = s * p[k];
      assert.ok(q <= tol, `${name}[${k}] must be ≤ 0 on the larger side (min form), got ${q}`);
      if (!matched[k]) assert.ok(Math.abs(q) <= tol, `${name}[${k}] is unmatched and must be 0, got ${q}`);
    }
  };
  if (rows < cols) checkSide(v, matchedCol, 'v');
  if (rows > cols) checkSide(u, matchedRow, 'u');
  for (let i = 0; i < rows; i++) dualObj += u[i];
  for (let j = 0; j < cols; j++) dualObj += v[j];
  assert.ok(Math.abs(dualObj - a.total) <= tol * (rows + cols + 1), `dual objective ${dualObj} vs total ${a.total}`);
}

function randomCost(rng: Rng, rows: number, cols: number, kind: number, maximize: boolean): Float64Array {
  const c = new Float64Array(rows * cols);
  const forbid = maximize ? -Infinity : Infinity;
  for (let k = 0; k < c.length; k++) {
    switch (kind) {
      case 0: c[k] = rng.int(3); break; // many ties
      case 1: c[k] = rng.int(11) - 5; break; // negative integers
      case 2: c[k] = rng.normal(); break;
      case 3: c[k] = rng.uniform() * 1000 - 500; break;
      default: c[k] = rng.int(4) === 0 ? forbid : rng.int(6); // forbidden pairs
    }
  }
  return c;
}

test('matches brute force on small square, wide and tall matrices (min and max)', () => {
  const rng = new Rng(20240601);
  let cases = 0;
  let infeasibleSeen = 0;
  for (let t = 0; t < 1500; t++) {
    const square = t % 3 === 0;
    const rows = square ? 1 + rng.int(7) : 1 + rng.int(7);
    const cols = square ? rows : 1 + rng.int(7);
    const maximize = rng.int(2) === 1;
    const kind = rng.int(5);
    const cost = randomCost(rng, rows, cols, kind, maximize);
    const best = bruteForce(cost, rows, cols, maximize);
    if (!Number.isFinite(best)) {
      assert.throws(() => linearSumAssignment(cost, rows, cols, { maximize }), /linearSumAssignment: .*infeasible/);
      infeasibleSeen++;
      continue;
    }
    const a = linearSumAssignment(cost, rows, cols, { maximize });
    checkStructure(a, cost, rows, cols);
    assert.ok(Math.abs(a.total - best) <= 1e-9 * (1 + Math.abs(best)), `case ${t} (${rows}×${cols}, kind ${kind}, max ${maximize}): ${a.total} vs brute force ${best}`);
    checkDuals(a, cost, rows, cols, maximize, 1e-9);
    cases++;
  }
  assert.ok(cases > 1200 && infeasibleSeen > 0);
});

/** Exact optimum of a square n×n problem by dynamic programming over column subsets (n ≤ ~16). */
function subsetDP(cost: ArrayLike<number>, n: number, maximize: boolean): number {
  const s = maximize ? -1 : 1;
  const best = new Float64Array(1 << n).fill(Infinity);
  best[0] = 0;
  for (let mask = 0; mask < 1 << n; mask++) {
    const b = best[mask];
    if (b === Infinity) continue;
    let row = 0;
    for (let t = mask; t; t &= t - 1) row++;
    if (row === n) continue;
    for (let j = 0; j < n; j++) {
      if (mask & (1 << j)) continue;
      const v = b + s * cost[row * n + j];
      if (v < best[mask | (1 << j)]) best[mask | (1 << j)] = v;
    }
  }
  return s * best[(1 << n) - 1];
}

/**
 * Inner products of random feature vectors whose rows and columns carry very different scales, as
 * in weight matching's similarity matrices for trained networks (a few large-norm units hold the
 * best entry of most rows and columns).
 */
function scaledSimilarity(rng: Rng, n: number, dim: number): Float64Array {
  const fa = Float64Array.from({ length: n * dim }, () => rng.normal());
  const fb = Float64Array.from({ length: n * dim }, (_, k) => 0.7 * fa[k] + 0.7 * rng.normal());
  const sa = Float64Array.from({ length: n }, () => Math.exp(rng.normal()));
  const sb = Float64Array.from({ length: n }, () => Math.exp(rng.normal()));
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let d = 0;
      for (let k = 0; k < dim; k++) d += fa[i * dim + k] * fb[j * dim + k];
      m[i * n + j] = sa[i] * sb[j] * d;
    }
  }
  return m;
}

test('square matrices larger than the row cache match an exact subset DP (ties, scaled rows and columns)', () => {
  // Augmenting row reduction remembers each row's 8 cheapest columns; from 9 columns on, rows also
  // have columns outside the cache, which the brute-force sizes above never reach.
  const rng = new Rng(424242);
  let cases = 0;
  for (let t = 0; t < 300; t++) {
    const n = 9 + rng.int(5);
    const maximize = rng.int(2) === 1;
    const kind = t % 4;
    const cost = kind < 3 ? randomCost(rng, n, n, kind, maximize) : scaledSimilarity(rng, n, 3);
    const best = subsetDP(cost, n, maximize);
    const a = linearSumAssignment(cost, n, n, { maximize });
    checkStructure(a, cost, n, n);
    assert.ok(Math.abs(a.total - best) <= 1e-9 * (1 + Math.abs(best)), `case ${t} (n ${n}, kind ${kind}, max ${maximize}): ${a.total} vs ${best}`);
    checkDuals(a, cost, n, n, maximize, 1e-9);
    cases++;
  }
  assert.equal(cases, 300);
});

test('similarity matrices with rows and columns on different scales (weight matching on trained networks)', () => {
  const rng = new Rng(8);
  for (const [n, dim] of [[300, 16], [256, 64]]) {
    const sim = scaledSimilarity(rng, n, dim);
    const a = linearSumAssignment(sim, n, n, { maximize: true });
    checkStructure(a, sim, n, n);
    checkDuals(a, sim, n, n, true, 1e-8);
    // Minimising the negated matrix is the same problem.
    const neg = sim.map((z) => -z);
    const b = linearSumAssignment(neg, n, n);
    assert.deepEqual(Array.from(b.colInd), Array.from(a.colInd));
    checkDuals(b, neg, n, n, false, 1e-8);
  }
});

test('Float32 input gives the same optimum as its float64 copy', () => {
  const rng = new Rng(7);
  for (let t = 0; t < 200; t++) {
    const rows = 1 + rng.int(6);
    const cols = 1 + rng.int(6);
    const c32 = new Float32Array(rows * cols);
    for (let k = 0; k < c32.length; k++) c32[k] = rng.normal();
    const c64 = Float64Array.from(c32);
    const a = linearSumAssignment(c32, rows, cols);
    const best = bruteForce(c64, rows, cols, false);
    assert.ok(Math.abs(a.total - best) <= 1e-12 * (1 + Math.abs(best)), `${a.total} vs ${best}`);
    checkStructure(a, c32, rows, cols);
  }
});

test('large random problems carry a valid optimality certificate', () => {
  const rng = new Rng(99);
  const shapes: Array<[number, number, number, boolean]> = [
    // rows, cols, kind, maximize
    [400, 400, 3, false],
    [400, 400, 2, true],
    [300, 300, 0, false], // ties everywhere
    [300, 500, 2, false],
    [500, 300, 3, true],
    [350, 350, 4, false], // a quarter of the pairs forbidden
  ];
  for (const [rows, cols, kind, maximize] of shapes) {
    const cost = randomCost(rng, rows, cols, kind, maximize);
    const a = linearSumAssignment(cost, rows, cols, { maximize });
    checkStructure(a, cost, rows, cols);
    checkDuals(a, cost, rows, cols, maximize, 1e-8);
  }
});

test('structured matrices (long searches, ties everywhere) also carry a valid certificate', () => {
  const rng = new Rng(5);
  const a = Float64Array.from({ length: 300 }, () => rng.normal());
  const b = Float64Array.from({ length: 300 }, () => rng.normal());
  const cases: Array<[string, number, number, (i: number, j: number) => number]> = [
    ['i·j', 250, 250, (i, j) => i * j],
    ['rank one', 300, 300, (i, j) => a[i] * b[j]],
    ['rank one, wide', 200, 300, (i, j) => a[i] * b[j]],
    ['i + j', 300, 300, (i, j) => i + j],
    ['zeros', 300, 300, () => 0],
    ['|i − j| mod 7, tall', 300, 220, (i, j) => Math.abs(i - j) % 7],
  ];
  for (const [name, rows, cols, f] of cases) {
    const cost = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) cost[i * cols + j] = f(i, j);
    for (const maximize of [false, true]) {
      const r = linearSumAssignment(cost, rows, cols, { maximize });
      checkStructure(r, cost, rows, cols);
      assert.doesNotThrow(() => checkDuals(r, cost, rows, cols, maximize, 1e-7), name);
    }
  }
});

test('a planted permutation (−P + small noise) is recovered exactly', () => {
  const rng = new Rng(3);
  for (const n of [300, 500]) {
    const perm = rng.permutation(n);
    const cost = new Float64Array(n * n);
    for (let k = 0; k < cost.length; k++) cost[k] = 0.05 * rng.uniform();
    for (let i = 0; i < n; i++) cost[i * n + perm[i]] -= 1;
    const a = linearSumAssignment(cost, n, n);
    assert.deepEqual(permutationFromAssignment(a, n), perm);
    checkDuals(a, cost, n, n, false, 1e-9);
    // The same structure seen as a similarity to maximise (the re-basin weight-matching form).
    const sim = cost.map((z) => -z);
    const b = linearSumAssignment(sim, n, n, { maximize: true });
    assert.deepEqual(permutationFromAssignment(b, n), perm);
  }
});

test('degenerate sizes: 0×0, 0×n, n×0, 1×1, 1×n, n×1', () => {
  for (const [r, c] of [[0, 0], [0, 5], [5, 0]] as const) {
    const a = linearSumAssignment(new Float64Array(0), r, c);
    assert.equal(a.rowInd.length, 0);
    assert.equal(a.colInd.length, 0);
    assert.equal(a.total, 0);
    assert.equal(a.u.length, r);
    assert.equal(a.v.length, c);
  }
  const one = linearSumAssignment(new Float64Array([-2.5]), 1, 1);
  assert.deepEqual([...one.rowInd, ...one.colInd, one.total], [0, 0, -2.5]);
  const wide = linearSumAssignment(new Float64Array([3, 1, 2]), 1, 3);
  assert.deepEqual([...wide.rowInd, ...wide.colInd, wide.total], [0, 1, 1]);
  const tall = linearSumAssignment(new Float64Array([3, 1, 2]), 3, 1, { maximize: true });
  assert.deepEqual([...tall.rowInd, ...tall.colInd, tall.total], [0, 0, 3]);
  const oneInf = linearSumAssignment(new Float64Array([Infinity, 4]), 1, 2);
  assert.deepEqual([...oneInf.colInd], [1]);
});

test('rejects bad input with clear errors', () => {
  const ok = new Float64Array(4);
  assert.throws(() => linearSumAssignment(new Float64Array([1, NaN, 3, 4]), 2, 2), /linearSumAssignment: .*NaN at \(0, 1\)/);
  assert.throws(() => linearSumAssignment(ok, 2, 3), /linearSumAssignment: cost has length 4 but rows×cols = 2×3 = 6/);
  assert.throws(() => linearSumAssignment(ok, 1.5, 2), /rows must be a non-negative integer/);
  assert.throws(() => linearSumAssignment(ok, 2, -2), /cols must be a non-negative integer/);
  assert.throws(() => linearSumAssignment(ok, NaN, 2), /rows must be a non-negative integer/);
  assert.throws(() => linearSumAssignment([1, 2, 3, 4] as unknown as Float64Array, 2, 2), /Float64Array or Float32Array/);
  // −∞ when minimising (or +∞ when maximising) would make the optimum unbounded.
  assert.throws(() => linearSumAssignment(new Float64Array([1, -Infinity, 3, 4]), 2, 2), /-Infinity .*minimising/);
  assert.throws(() => linearSumAssignment(new Float64Array([1, Infinity, 3, 4]), 2, 2, { maximize: true }), /Infinity .*maximising/);
  // Infeasible: a row with no finite entry; two rows that only accept the same column; all forbidden.
  const I = Infinity;
  assert.throws(() => linearSumAssignment(new Float64Array([1, 2, I, I]), 2, 2), /infeasible/);
  assert.throws(() => linearSumAssignment(new Float64Array([1, I, I, 2, I, I, 4, 5, 6]), 3, 3), /infeasible/);
  assert.throws(() => linearSumAssignment(new Float64Array([I, I, I, I, I, I]), 2, 3), /infeasible/);
  assert.throws(() => linearSumAssignment(new Float64Array([-I, -I, 0, -I]), 2, 2, { maximize: true }), /infeasible/);
  // A large Hall violation deep inside the search.
  const n = 200;
  const big = new Float64Array(n * n).fill(1);
  for (let i = 0; i < 3; i++) for (let j = 2; j < n; j++) big[i * n + j] = I;
  assert.throws(() => linearSumAssignment(big, n, n), /infeasible/);
});

test('permutationFromAssignment', () => {
  const cost = new Float64Array([5, 1, 9, 2, 8, 7, 1, 9, 3]);
  const a = linearSumAssignment(cost, 3, 3);
  assert.deepEqual([...permutationFromAssignment(a, 3)], [1, 0, 2]);
  assert.throws(() => permutationFromAssignment(linearSumAssignment(new Float64Array(6), 2, 3), 3), /expected 3 pairs/);
});
