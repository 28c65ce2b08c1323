/**
 * Disjoint sets over the integers 0..n-1 (union by size, path halving). Spec derivation uses it to
 * merge every channel space added into the same residual stream into one permutation group.
 */
export class UnionFind {
  private parent: number[] = [];
  private rank: number[] = [];

  constructor(n = 0) {
    for (let i = 0; i < n; i++) this.add();
  }

  /** Number of elements. */
  get size(): number {
    return this.parent.length;
  }

  /** Adds a new singleton set and returns its element. */
  add(): number {
    const i = this.parent.length;
    this.parent.push(i);
    this.rank.push(1);
    return i;
  }

  find(i: number): number {
    this.check(i);
    let x = i;
    while (this.parent[x] !== x) {
      this.parent[x] = this.parent[this.parent[x]];
      x = this.parent[x];
    }
    return x;
  }

  /** Merges the sets of a and b; returns the new root. */
  union(a: number, b: number): number {
    let ra = this.find(a);
    let rb = this.find(b);
    if (ra === rb) return ra;
    if (this.rank[ra] < this.rank[rb]) [ra, rb] = [rb, ra];
    this.parent[rb] = ra;
    this.rank[ra] += this.rank[rb];
    return ra;
  }

  connected(a: number, b: number): boolean {
    return this.find(a) === this.find(b);
  }

  /** The sets, each sorted ascending, ordered by their smallest element (deterministic). */
  groups(): number[][] {
    const byRoot = new Map<number, number[]>();
    for (let i = 0; i < this.parent.length; i++) {
      const r = this.find(i);
      const g = byRoot.get(r);
      if (g) g.push(i);
      else byRoot.set(r, [i]);
    }
    return [...byRoot.values()].sort((x, y) => x[0] - y[0]);
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.parent.length) {
      throw new Error(`UnionFind: element ${i} is out of range [0, ${this.parent.length})`);
    }
  }
}
