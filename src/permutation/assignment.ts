/**
 * Exact linear assignment (LAP): the minimum- (or maximum-) cost matching of rows to columns of a
 * dense cost matrix, the TypeScript counterpart of scipy.optimize.linear_sum_assignment.
 */

export interface Assignment {
  /** Row indices of the chosen pairs, increasing. */
  rowInd: Int32Array;
  /** Column matched to rowInd[k]. */
  colInd: Int32Array;
  /** Sum of the chosen cost entries (the optimum). */
  total: number;
  /**
   * Dual potentials, one per row (u) and per column (v), certifying optimality. Minimising:
   * u_i + v_j ≤ c_ij for every entry with equality on the chosen pairs; when rows ≠ cols the
   * potentials of the larger side are also ≤ 0 and exactly 0 on its unmatched indices.
   * Maximising: the same with every inequality reversed (≥, and ≥ 0).
   */
  u: Float64Array;
  v: Float64Array;
}

export interface AssignmentOptions {
  maximize?: boolean;
}

const FN = 'linearSumAssignment';

/**
 * Solves the rectangular linear assignment problem exactly: picks min(rows, cols) entries of the
 * row-major `rows`×`cols` matrix `cost`, no two in one row or one column, with the least (or with
 * `maximize` the greatest) sum. Entries equal to +Infinity (−Infinity when maximising) are
 * forbidden; NaN, the opposite infinity, or a matrix with no finite assignment throw.
 *
 * Algorithm: shortest augmenting paths with column potentials, O(n²·m) —
 * R. Jonker & A. Volgenant, "A shortest augmenting path algorithm for dense and sparse linear
 * assignment problems", Computing 38 (1987) 325–340 (LAPJV), in the rectangular form of
 * D. F. Crouse, "On implementing 2D rectangular assignment algorithms", IEEE TAES 52(4), 2016.
 * Square finite matrices get a LAPJV-style initialisation (column reduction of the row-reduced
 * matrix, then two rounds of augmenting row reduction, run long on cached row minima), which
 * leaves few rows, often none, for the Dijkstra phase.
 * Rectangular matrices (more rows than columns are transposed first) and matrices with forbidden
 * entries start from zero column potentials, so unmatched columns keep potential 0 as the
 * rectangular duals require. The result carries those duals (u, v) as an optimality certificate.
 */
export function linearSumAssignment(
  cost: Float64Array | Float32Array,
  rows: number,
  cols: number,
  options: AssignmentOptions = {},
): Assignment {
  if (!(cost instanceof Float64Array) && !(cost instanceof Float32Array)) {
    throw new Error(`${FN}: cost must be a Float64Array or Float32Array`);
  }
  checkDim(rows, 'rows');
  checkDim(cols, 'cols');
  if (cost.length !== rows * cols) {
    throw new Error(`${FN}: cost has length ${cost.length} but rows×cols = ${rows}×${cols} = ${rows * cols}`);
  }
  const maximize = options.maximize === true;
  const transpose = rows > cols;
  const n = transpose ? cols : rows; // rows of the working problem (n ≤ m)
  const m = transpose ? rows : cols;
  const u = new Float64Array(rows);
  const v = new Float64Array(cols);

  // The solver minimises sg·c over a float64 matrix c with n ≤ m. A float64 input that needs no
  // transposing is used in place, maximising through sg = −1: callers (weight matching) maximise
  // square float64 similarities over and over, and a fresh n×m copy costs a pass plus page faults,
  // more than the multiply (≈5% on the hot loops). Anything else is copied, negated as needed.
  let c: Float64Array;
  let hasInf: boolean;
  let sg = maximize ? -1 : 1;
  const rowMin = new Float64Array(transpose ? 0 : rows); // row minima of sg·c, when not transposed
  if (!transpose && cost instanceof Float64Array) {
    c = cost;
    hasInf = checkEntries(cost, rows, cols, maximize, rowMin);
  } else {
    c = new Float64Array(n * m);
    hasInf = copyEntries(cost, rows, cols, maximize, transpose, c, rowMin);
    sg = 1;
  }
  if (n === 0) return { rowInd: new Int32Array(0), colInd: new Int32Array(0), total: 0, u, v };

  const x = new Int32Array(n).fill(-1); // column of each working row
  const y = new Int32Array(m).fill(-1); // row of each working column
  const w = new Float64Array(m); // column potentials
  const free = new Int32Array(n);
  let numFree: number;
  if (n === m && !hasInf) {
    numFree = initSquare(c, sg, n, rowMin, x, y, w, free);
  } else {
    numFree = initRect(c, sg, n, m, x, y, free);
  }
  augmentAll(c, sg, n, m, x, y, w, free, numFree);

  // Row potentials follow from complementary slackness on the matched entries.
  const sign = maximize ? -1 : 1;
  const rowInd = new Int32Array(n);
  const colInd = new Int32Array(n);
  let total = 0;
  if (!transpose) {
    for (let i = 0; i < n; i++) {
      const j = x[i];
      rowInd[i] = i;
      colInd[i] = j;
      total += cost[i * cols + j];
      u[i] = sign * (sg * c[i * m + j] - w[j]);
    }
    for (let j = 0; j < m; j++) v[j] = sign * w[j];
  } else {
    // Working rows are the original columns; report pairs sorted by original row.
    const colOfRow = new Int32Array(m).fill(-1);
    for (let q = 0; q < n; q++) {
      colOfRow[x[q]] = q;
      v[q] = sign * (sg * c[q * m + x[q]] - w[x[q]]);
    }
    for (let r = 0; r < m; r++) u[r] = sign * w[r];
    let k = 0;
    for (let r = 0; r < m; r++) {
      const q = colOfRow[r];
      if (q < 0) continue;
      rowInd[k] = r;
      colInd[k] = q;
      total += cost[r * cols + q];
      k++;
    }
  }
  return { rowInd, colInd, total, u, v };
}

/** perm[row] = column for a square assignment of size n (every row matched). */
export function permutationFromAssignment(a: Assignment, n: number): Int32Array {
  if (a.rowInd.length !== n || a.colInd.length !== n) {
    throw new Error(`permutationFromAssignment: expected ${n} pairs (square problem), got ${a.rowInd.length}`);
  }
  const perm = new Int32Array(n).fill(-1);
  const seen = new Uint8Array(n);
  for (let k = 0; k < n; k++) {
    const r = a.rowInd[k];
    const col = a.colInd[k];
    if (r < 0 || r >= n || col < 0 || col >= n || perm[r] !== -1 || seen[col]) {
      throw new Error(`permutationFromAssignment: pair (${r}, ${col}) is out of range or repeated`);
    }
    perm[r] = col;
    seen[col] = 1;
  }
  return perm;
}

function checkDim(d: number, name: string): void {
  if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
    throw new Error(`${FN}: ${name} must be a non-negative integer, got ${d}`);
  }
}

/**
 * Throws on NaN and on the infinity that would make the optimum unbounded; reports any infinity.
 * Also stores each row's minimum of the minimisation form (±cost) in rowMin, for initSquare, so
 * that the row reduction costs no extra pass over the matrix.
 */
function checkEntries(cost: Float64Array, rows: number, cols: number, maximize: boolean, rowMin: Float64Array): boolean {
  const badInf = maximize ? Infinity : -Infinity;
  const s = maximize ? -1 : 1;
  let hasInf = false;
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    let mn = Infinity;
    for (let q = 0; q < cols; q++) {
      const a = cost[off + q];
      if (a !== a || a === badInf) badEntry(a, off + q, cols, maximize);
      if (a === Infinity || a === -Infinity) hasInf = true;
      const h = s * a;
      if (h < mn) mn = h;
    }
    rowMin[r] = mn;
  }
  return hasInf;
}

/**
 * checkEntries fused with writing the minimisation form (negated if maximising, transposed if
 * tall); rowMin is filled only when not transposing.
 */
function copyEntries(
  cost: Float64Array | Float32Array,
  rows: number,
  cols: number,
  maximize: boolean,
  transpose: boolean,
  out: Float64Array,
  rowMin: Float64Array,
): boolean {
  const s = maximize ? -1 : 1;
  let hasInf = false;
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    let mn = Infinity;
    for (let q = 0; q < cols; q++) {
      const a = s * cost[off + q];
      if (a !== a || a === -Infinity) badEntry(cost[off + q], off + q, cols, maximize);
      if (a === Infinity) hasInf = true;
      if (a < mn) mn = a;
      out[transpose ? q * rows + r : off + q] = a;
    }
    if (!transpose) rowMin[r] = mn;
  }
  return hasInf;
}

function badEntry(a: number, k: number, cols: number, maximize: boolean): never {
  const at = `(${Math.floor(k / cols)}, ${k % cols})`;
  if (a !== a) throw new Error(`${FN}: cost contains NaN at ${at}`);
  // −∞ when minimising (+∞ when maximising) would make the optimum unbounded, as in scipy.
  throw new Error(`${FN}: cost contains ${a} at ${at}, invalid when ${maximize ? 'maximising' : 'minimising'}`);
}

function infeasible(): never {
  throw new Error(`${FN}: cost matrix is infeasible (no assignment with a finite total exists)`);
}

// Below, every function reads the cost as sg·c (sg = ±1, see linearSumAssignment), and c_ij in the
// comments means that product. The phases are split into small functions with one hot loop each:
// V8 optimises a long loop mid-run (on-stack replacement), and if the optimised function then
// reaches code that has never run, it deoptimises and starts over in the interpreter, which made
// first calls several times slower.

/**
 * LAPJV-style initialisation for a square all-finite matrix with row minima `rowMin` (found
 * while checking the input). Leaves a partial assignment in which every matched row sits on a
 * minimum of its reduced costs c_ij − w_j; returns the number of free rows, listed in `free`.
 *
 * The column reduction is taken after subtracting each row's minimum (the Hungarian method's
 * two-sided reduction), not on the raw matrix as in LAPJV. On uniform random matrices the row
 * minima are all close to each other and this changes little, but weight matching's similarity
 * matrices for trained networks have rows and columns on very different scales: a few large-norm
 * rows hold the best entry of most columns, so a plain column reduction leaves potentials from
 * which the Dijkstra phase runs long searches (5× more settled columns than from these).
 * There is no reduction transfer: it costs most of a pass over the matrix, and augmenting row
 * reduction, whose steps are cheap here (see rowCacheTwoSmallest), does its work and more.
 */
function initSquare(
  c: Float64Array,
  sg: number,
  n: number,
  rowMin: Float64Array,
  x: Int32Array,
  y: Int32Array,
  w: Float64Array,
  free: Int32Array,
): number {
  const argmin = new Int32Array(n);
  columnMinima(c, sg, n, rowMin, w, argmin);
  // A row that is the minimum of several columns keeps one of them; the others stay unmatched.
  const matched = new Uint8Array(n);
  for (let j = n - 1; j >= 0; j--) {
    const i = argmin[j];
    if (matched[i] === 0) {
      matched[i] = 1;
      x[i] = j;
      y[j] = i;
    }
  }
  let numFree = 0;
  for (let i = 0; i < n; i++) if (matched[i] === 0) free[numFree++] = i;
  // Augmenting row reduction, two passes (LAPJV), sharing one cache of each row's cheapest columns.
  const cacheCost = new Float64Array(n * CACHED);
  const cacheCol = new Int32Array(n * CACHED).fill(-1);
  const cacheTop = new Float64Array(n);
  for (let pass = 0; pass < 2 && numFree > 0; pass++) {
    numFree = augmentingRowReduction(c, sg, n, x, y, w, free, numFree, cacheCost, cacheCol, cacheTop);
  }
  return numFree;
}

/**
 * Column reduction of the row-reduced matrix: w_j = min_i (c_ij − r_i), scanned row by row so
 * memory is read sequentially.
 */
function columnMinima(c: Float64Array, sg: number, n: number, r: Float64Array, w: Float64Array, argmin: Int32Array): void {
  const r0 = r[0];
  for (let j = 0; j < n; j++) w[j] = sg * c[j] - r0;
  for (let i = 1; i < n; i++) {
    const off = i * n;
    const ri = r[i];
    for (let j = 0; j < n; j++) {
      const h = sg * c[off + j] - ri;
      if (h < w[j]) {
        w[j] = h;
        argmin[j] = i;
      }
    }
  }
}

/**
 * How many of its cheapest columns augmenting row reduction remembers per row. During the
 * reduction potentials only decrease (nothing else touches w until it ends), so a row's reduced
 * costs only increase, and only in the few columns whose potential was lowered: every column left
 * out of the cache still costs at least the cache's top (the last cached cost when it was filled),
 * and the cached columns, re-evaluated, hold the row's two cheapest exactly as long as the second
 * cheapest of them is below that top. A row visited again (ousted rows are, many times) then costs
 * 8 entries instead of n, read from the cache rather than from the matrix.
 */
const CACHED = 8;

/**
 * Fills a row's cache with its CACHED cheapest columns under reduced costs c[off + j] − w_j, in
 * increasing (reduced cost, column) order: the columns at cacheCol[base …], their costs c_ij (not
 * reduced, so they stay valid as w changes) at cacheCost[base …]; the first two are the row's
 * cheapest (see augmentingRowReduction). Returns the reduced cost every column left out is at least (+∞ when n ≤ CACHED).
 */
function fillRowCache(
  c: Float64Array,
  sg: number,
  off: number,
  n: number,
  w: Float64Array,
  cacheCost: Float64Array,
  cacheCol: Int32Array,
  base: number,
): number {
  // Sorted by reduced cost in cacheCost first; the plain costs are written at the end.
  const k = n < CACHED ? n : CACHED;
  for (let j = 0; j < k; j++) insertSorted(cacheCost, cacheCol, base, j, sg * c[off + j] - w[j], j);
  let top = Infinity;
  if (k === CACHED) {
    const last = base + CACHED - 1;
    top = cacheCost[last];
    for (let j = CACHED; j < n; j++) {
      const h = sg * c[off + j] - w[j];
      if (h < top) {
        insertSorted(cacheCost, cacheCol, base, CACHED - 1, h, j);
        top = cacheCost[last];
      }
    }
  }
  for (let t = 0; t < k; t++) cacheCost[base + t] = sg * c[off + cacheCol[base + t]];
  return top;
}

/** Inserts (h, j) into the sorted run cacheCost[base … base + p − 1], dropping what is at p. */
function insertSorted(cacheCost: Float64Array, cacheCol: Int32Array, base: number, p: number, h: number, j: number): void {
  // Strictly greater moves, so among equal costs the earlier column stays first.
  while (p > 0 && cacheCost[base + p - 1] > h) {
    cacheCost[base + p] = cacheCost[base + p - 1];
    cacheCol[base + p] = cacheCol[base + p - 1];
    p--;
  }
  cacheCost[base + p] = h;
  cacheCol[base + p] = j;
}

/**
 * Finds the row's two cheapest columns in its cache, re-evaluated under the current potentials
 * (smallest reduced cost first, then smallest column, as a full scan orders them), and moves them
 * to the first two slots of the cache, where augmentingRowReduction reads them; the other slots
 * need no order. False when there is no cache yet or it cannot vouch for them: the second
 * cheapest cached cost has reached `top`, where an uncached column may be as cheap.
 */
function rowCacheTwoSmallest(w: Float64Array, cacheCost: Float64Array, cacheCol: Int32Array, base: number, top: number): boolean {
  let u1 = Infinity;
  let j1 = -1;
  let t1 = -1;
  let u2 = Infinity;
  let j2 = -1;
  let t2 = -1;
  for (let t = 0; t < CACHED; t++) {
    const j = cacheCol[base + t];
    if (j < 0) break;
    const h = cacheCost[base + t] - w[j];
    if (h < u1 || (h === u1 && j < j1)) {
      u2 = u1;
      j2 = j1;
      t2 = t1;
      u1 = h;
      j1 = j;
      t1 = t;
    } else if (h < u2 || (h === u2 && j < j2)) {
      u2 = h;
      j2 = j;
      t2 = t;
    }
  }
  // top = +∞ (n ≤ CACHED, every column cached) always vouches, as u2 is finite for n ≥ 2.
  if (j1 < 0 || !(u2 < top)) return false;
  swapSlots(cacheCost, cacheCol, base, 0, t1);
  if (t2 >= 0) swapSlots(cacheCost, cacheCol, base, 1, t2 === 0 ? t1 : t2);
  return true;
}

function swapSlots(cacheCost: Float64Array, cacheCol: Int32Array, base: number, s: number, t: number): void {
  if (s === t) return;
  const h = cacheCost[base + s];
  const j = cacheCol[base + s];
  cacheCost[base + s] = cacheCost[base + t];
  cacheCol[base + s] = cacheCol[base + t];
  cacheCost[base + t] = h;
  cacheCol[base + t] = j;
}

/** First unmatched column whose reduced cost in the row equals `u`, or −1. */
function freeColumnAt(
  c: Float64Array,
  sg: number,
  off: number,
  n: number,
  w: Float64Array,
  y: Int32Array,
  u: number,
): number {
  for (let j = 0; j < n; j++) if (y[j] < 0 && sg * c[off + j] - w[j] === u) return j;
  return -1;
}

/** freeColumnAt among the cached columns, valid when u is below the cache's top. */
function cachedFreeColumnAt(w: Float64Array, y: Int32Array, u: number, cacheCost: Float64Array, cacheCol: Int32Array, base: number): number {
  let jf = -1;
  for (let t = 0; t < CACHED; t++) {
    const j = cacheCol[base + t];
    if (j < 0) break;
    if (y[j] < 0 && cacheCost[base + t] - w[j] === u && (jf < 0 || j < jf)) jf = j;
  }
  return jf;
}

/**
 * One pass of augmenting row reduction: each free row takes its cheapest column, lowering that
 * column's potential by the gap to its second cheapest so that the row it ousts (if any) is pushed
 * elsewhere. ARR can cycle a few rows through long runs of tiny decrements, so a pass is capped
 * at a dozen full-row scans and 256 steps per free row; stopping early is always safe, leftover
 * rows go to Dijkstra. With the row caches most steps cost a few entries, not a scan, and running
 * the reduction this long leaves few rows (often none) for the Dijkstra phase.
 * Returns the new number of free rows (listed in `free`).
 */
function augmentingRowReduction(
  c: Float64Array,
  sg: number,
  n: number,
  x: Int32Array,
  y: Int32Array,
  w: Float64Array,
  free: Int32Array,
  prevFree: number,
  cacheCost: Float64Array,
  cacheCol: Int32Array,
  cacheTop: Float64Array,
): number {
  let k = 0;
  let numFree = 0;
  let scans = 0;
  let steps = 0;
  const maxScans = 12 * prevFree;
  const maxSteps = 256 * prevFree;
  while (k < prevFree) {
    if (scans >= maxScans || ++steps > maxSteps) {
      // Keep the rows not yet processed in the free list.
      while (k < prevFree) free[numFree++] = free[k++];
      break;
    }
    const i = free[k++];
    const off = i * n;
    const base = i * CACHED;
    if (!rowCacheTwoSmallest(w, cacheCost, cacheCol, base, cacheTop[i])) {
      cacheTop[i] = fillRowCache(c, sg, off, n, w, cacheCost, cacheCol, base);
      scans++;
    }
    // The row's two cheapest columns sit first in its cache.
    let j1 = cacheCol[base];
    const j2 = cacheCol[base + 1]; // < 0 only when n = 1
    const u1 = cacheCost[base] - w[j1];
    const u2 = j2 < 0 ? Infinity : cacheCost[base + 1] - w[j2];
    let i0 = y[j1];
    const strict = u1 < u2;
    if (strict) {
      if (u2 < Infinity) w[j1] -= u2 - u1;
    } else if (i0 >= 0) {
      // Tie: the second column is just as cheap, so take it rather than oust the first one's row.
      j1 = j2;
      i0 = y[j2];
      if (i0 >= 0) {
        // Both taken: look for a free column at the same minimum before ousting anyone. Without
        // this, matrices with many ties (integer costs, constant blocks) shuffle rows in vain.
        // Every column that cheap is cached unless the cache's top is that cheap too.
        let jf: number;
        if (u1 < cacheTop[i]) {
          jf = cachedFreeColumnAt(w, y, u1, cacheCost, cacheCol, base);
        } else {
          jf = freeColumnAt(c, sg, off, n, w, y, u1);
          scans++;
        }
        if (jf >= 0) {
          j1 = jf;
          i0 = -1;
        }
      }
    }
    x[i] = j1;
    y[j1] = i;
    if (i0 >= 0) {
      x[i0] = -1;
      // After a strict decrease the ousted row is retried at once (its best column just got dearer).
      if (strict) free[--k] = i0;
      else free[numFree++] = i0;
    }
  }
  return numFree;
}

/** Zero potentials; each row takes its cheapest column if still free. */
function initRect(
  c: Float64Array,
  sg: number,
  n: number,
  m: number,
  x: Int32Array,
  y: Int32Array,
  free: Int32Array,
): number {
  let numFree = 0;
  for (let i = 0; i < n; i++) {
    const jb = argminRow(c, sg, i * m, m);
    if (jb < 0) infeasible(); // the whole row is +Infinity
    if (y[jb] < 0) {
      x[i] = jb;
      y[jb] = i;
    } else {
      free[numFree++] = i;
    }
  }
  return numFree;
}

/** Column of the smallest finite entry of a row (first on ties), or −1 if all are +∞. */
function argminRow(c: Float64Array, sg: number, off: number, m: number): number {
  let best = Infinity;
  let jb = -1;
  for (let j = 0; j < m; j++) {
    const h = sg * c[off + j];
    if (h < best) {
      best = h;
      jb = j;
    }
  }
  return jb;
}

/**
 * Dijkstra phase: for each free row, grow shortest paths over reduced costs c_ij − w_j until an
 * unmatched column is settled, lower the potentials of the settled columns, and flip the path.
 * Relaxation and the search for the next closest column share one sweep over the cost row.
 * A search usually settles few columns, so settled columns are only masked (potential −∞ makes
 * their reduced cost +∞) and rows are swept directly in column order, which streams from memory
 * and beats gathering through an index list. Long searches (a quarter of the columns settled, as
 * on structured matrices) switch to an ascending list of the open columns so each sweep shrinks.
 */
function augmentAll(
  c: Float64Array,
  sg: number,
  n: number,
  m: number,
  x: Int32Array,
  y: Int32Array,
  w: Float64Array,
  free: Int32Array,
  numFree: number,
): void {
  if (numFree === 0) return;
  const d = new Float64Array(m); // tentative distance of open columns (+∞ once settled)
  const pred = new Int32Array(m); // row the distance came through
  const setCol = new Int32Array(m); // settled columns in order,
  const setDist = new Float64Array(m); // their distances
  const setW = new Float64Array(m); // and their real potentials
  const open = new Int32Array(m); // open columns, in list mode
  const listFrom = Math.max(32, m >> 2);
  for (let f = 0; f < numFree; f++) {
    const start = free[f];
    let best = sweepFirst(c, sg, start * m, m, w, d, pred, y, start);
    let settled = 0;
    let nOpen = -1; // < 0: direct mode
    let min = 0;
    let j1 = -1;
    for (;;) {
      min = d[best];
      if (min === Infinity) infeasible();
      j1 = best;
      const i = y[j1];
      if (i < 0) break;
      const wj1 = w[j1];
      setCol[settled] = j1;
      setDist[settled] = min;
      setW[settled] = wj1;
      settled++;
      w[j1] = -Infinity;
      d[j1] = Infinity;
      if (nOpen >= 0) {
        // Keep the list ascending (a memmove) so the sweeps still read rows in address order.
        const at = open.indexOf(j1, 0);
        open.copyWithin(at, at + 1, nOpen--);
      } else if (settled >= listFrom) {
        nOpen = 0;
        for (let j = 0; j < m; j++) if (w[j] !== -Infinity) open[nOpen++] = j;
      }
      // Relax the open columns through row i, the row matched to the column just settled.
      const off = i * m;
      const h0 = sg * c[off + j1] - wj1 - min;
      best = nOpen < 0
        ? sweep(c, sg, off, m, w, d, pred, y, i, h0)
        : sweepList(c, sg, off, open, nOpen, w, d, pred, y, i, h0);
    }
    // Settled columns lower their potentials by how much closer than the end they were.
    for (let k = 0; k < settled; k++) w[setCol[k]] = setW[k] + (setDist[k] - min);
    // Flip the alternating path back to the start row.
    let j = j1;
    for (;;) {
      const i = pred[j];
      y[j] = i;
      const prev = x[i];
      x[i] = j;
      if (i === start) break;
      j = prev;
    }
  }
}

/** Starts a search from free row `start`: d_j = c_start,j − w_j; returns the closest column. */
function sweepFirst(
  c: Float64Array,
  sg: number,
  off: number,
  m: number,
  w: Float64Array,
  d: Float64Array,
  pred: Int32Array,
  y: Int32Array,
  start: number,
): number {
  let lowest = Infinity;
  let best = -1;
  for (let j = 0; j < m; j++) {
    const h = sg * c[off + j] - w[j];
    d[j] = h;
    pred[j] = start;
    // Among equally close columns prefer an unmatched one: it ends the search.
    if (h <= lowest && (h < lowest || y[j] < 0)) {
      lowest = h;
      best = j;
    }
  }
  return best;
}

/** Relaxes every column through row i (settled ones are masked); returns the closest open column. */
function sweep(
  c: Float64Array,
  sg: number,
  off: number,
  m: number,
  w: Float64Array,
  d: Float64Array,
  pred: Int32Array,
  y: Int32Array,
  i: number,
  h0: number,
): number {
  let lowest = Infinity;
  let best = -1;
  for (let j = 0; j < m; j++) {
    const h = sg * c[off + j] - w[j] - h0;
    let dj = d[j];
    if (h < dj) {
      d[j] = h;
      pred[j] = i;
      dj = h;
    }
    if (dj <= lowest && (dj < lowest || y[j] < 0)) {
      lowest = dj;
      best = j;
    }
  }
  return best;
}

/** sweep over the listed open columns only. */
function sweepList(
  c: Float64Array,
  sg: number,
  off: number,
  open: Int32Array,
  nOpen: number,
  w: Float64Array,
  d: Float64Array,
  pred: Int32Array,
  y: Int32Array,
  i: number,
  h0: number,
): number {
  let lowest = Infinity;
  let best = -1;
  for (let t = 0; t < nOpen; t++) {
    const j = open[t];
    const h = sg * c[off + j] - w[j] - h0;
    let dj = d[j];
    if (h < dj) {
      d[j] = h;
      pred[j] = i;
      dj = h;
    }
    if (dj <= lowest && (dj < lowest || y[j] < 0)) {
      lowest = dj;
      best = j;
    }
  }
  return best;
}
