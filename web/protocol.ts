/** Messages between the page (main.ts) and its worker (worker.ts). */
export type AlignMethod = 'wm' | 'sinkhorn-l2';

export interface AlignRequest {
  type: 'align';
  a: ArrayBuffer;
  aName: string;
  b: ArrayBuffer;
  bName: string;
  /** A permutation spec (JSON text), like `--spec`; null: derived from the ONNX model or the checkpoints. */
  spec: { name: string; text: string } | null;
  /** An ONNX model for the architecture, like `--onnx` (plain weights carry none). */
  onnx: { name: string; bytes: ArrayBuffer } | null;
  method: AlignMethod;
  tau?: number;
  steps?: number;
  seed: number;
}

export interface GroupMoved {
  name: string;
  size: number;
  moved: number;
}

export interface AlignSummary {
  method: AlignMethod;
  steps: number;
  seconds: number;
  finalCost: number | null;
  equivalence: { kind: string; maxAbsDiff: number; passed: boolean; note?: string };
  permutations: GroupMoved[];
  outputName: string;
}

/** The live demo: two MLPs trained on the bundled MNIST subset, aligned, their linear paths. */
export interface DemoRequest {
  type: 'demo';
  /** The subset asset (mnist-subset.bin, see scripts/build-web.mjs). */
  data: ArrayBuffer;
  epochs: number;
}

export const DEMO_METHODS = ['naive', 'wm', 'sinkhorn-mid'] as const;
export type DemoMethod = (typeof DEMO_METHODS)[number];

export type WorkerRequest = AlignRequest | DemoRequest;

export type WorkerMessage =
  | { type: 'ready'; backend: string; detail: string; note: string | null }
  | { type: 'progress'; step: number; cost: number }
  | { type: 'done'; bytes: ArrayBuffer; summary: AlignSummary }
  | { type: 'error'; message: string }
  | { type: 'demo-progress'; text: string; fraction: number }
  | { type: 'demo-point'; method: DemoMethod; lambda: number; loss: number; accuracy: number }
  | { type: 'demo-done'; seconds: number; barriers: Record<DemoMethod, { loss: number; accuracy: number }>; endpoints: { accA: number; accB: number } };
