/**
 * Resumable-run state files: one safetensors file per method, rewritten atomically after every
 * finished unit (task, or epoch of joint training). Tensors hold the strategy's parameters and
 * whatever else it keeps (EWC's per-task Fisher and θ_k); the "__metadata__" holds JSON: the run
 * configuration (checked on resume), units done, the accuracy rows so far, per-unit seconds, the
 * method's RNG state (Rng.getState) and the strategy's own JSON (replay/A-GEM memory indices…).
 * Nothing else needs saving at a task boundary: RebasinIL's X and Δ and every optimiser are fresh
 * per task, and LwF's "old model" is the saved θ itself.
 */
import { existsSync } from 'node:fs';
import { Tensor } from '../core/index.js';
import { InputError } from '../errors.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { StateDict } from '../io/records.js';
import type { StrategySnapshot } from '../continual/strategy.js';

export const STATE_FORMAT = 'rebasin-continual-state';
export const STATE_VERSION = 1;

export interface RunState {
  method: string;
  /** JSON-comparable run configuration; a resume must match it exactly. */
  config: Record<string, unknown>;
  unitsDone: number;
  R: number[][];
  unitSeconds: number[];
  rng: number[];
  snapshot: StrategySnapshot;
}

/** JSON with NaN/±Inf written as null (Rng states hold NaN when no spare normal is cached). */
export function toJson(v: unknown, space?: number): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : x), space);
}

const nanIfNull = (v: unknown): number => (v === null ? NaN : (v as number));

export async function writeRunState(path: string, s: RunState): Promise<void> {
  const records: StateDict = new Map();
  for (const [k, t] of s.snapshot.tensors) {
    records.set(k, { shape: [...t.shape], data: t.data instanceof Float32Array ? t.data : Float32Array.from(t.data) });
  }
  const metadata: Record<string, string> = {
    format: STATE_FORMAT,
    version: String(STATE_VERSION),
    method: s.method,
    config: toJson(s.config),
    progress: toJson({ unitsDone: s.unitsDone, R: s.R, unitSeconds: s.unitSeconds, rng: s.rng, meta: s.snapshot.meta }),
  };
  await writeSafetensors(path, records, { metadata });
}

function corrupt(path: string, why: string): InputError {
  return new InputError(`continual state file ${path} is corrupt or not a state file (${why}); delete it to start that method over`);
}

/** Reads a state file; null when it does not exist. Any damage is an InputError naming the file. */
export async function readRunState(path: string): Promise<RunState | null> {
  if (!existsSync(path)) return null;
  let tensors: StateDict;
  let metadata: Record<string, string>;
  try {
    ({ tensors, metadata } = await readSafetensors(path));
  } catch (e) {
    throw corrupt(path, (e as Error).message);
  }
  if (metadata.format !== STATE_FORMAT) throw corrupt(path, `metadata "format" is ${JSON.stringify(metadata.format)}, expected "${STATE_FORMAT}"`);
  if (metadata.version !== String(STATE_VERSION)) throw corrupt(path, `state version ${metadata.version} is not supported (expected ${STATE_VERSION})`);
  let config: Record<string, unknown>;
  let progress: { unitsDone: number; R: (number | null)[][]; unitSeconds: number[]; rng: (number | null)[]; meta: Record<string, unknown> };
  try {
    config = JSON.parse(metadata.config ?? '') as Record<string, unknown>;
    progress = JSON.parse(metadata.progress ?? '') as typeof progress;
  } catch (e) {
    throw corrupt(path, `metadata is not valid JSON: ${(e as Error).message}`);
  }
  const p = progress;
  if (!p || !Number.isInteger(p.unitsDone) || p.unitsDone < 1 || !Array.isArray(p.R) || !Array.isArray(p.unitSeconds) || !Array.isArray(p.rng) || p.rng.length !== 5 || typeof p.meta !== 'object' || p.meta === null) {
    throw corrupt(path, 'metadata "progress" lacks unitsDone, R, unitSeconds, rng or meta');
  }
  const snapTensors = new Map<string, Tensor>();
  for (const [k, r] of tensors) snapTensors.set(k, new Tensor(r.data, r.shape));
  return {
    method: metadata.method ?? '',
    config,
    unitsDone: p.unitsDone,
    R: p.R.map((row) => row.map(nanIfNull)),
    unitSeconds: p.unitSeconds,
    rng: p.rng.map(nanIfNull),
    snapshot: { tensors: snapTensors, meta: p.meta },
  };
}

/** Names the first difference between two JSON-comparable configurations, or null. */
export function configDifference(saved: Record<string, unknown>, now: Record<string, unknown>): string | null {
  const keys = new Set([...Object.keys(saved), ...Object.keys(now)]);
  for (const k of keys) {
    const a = toJson(saved[k]);
    const b = toJson(now[k]);
    if (a !== b) return `${k}: saved ${a ?? 'unset'}, now ${b ?? 'unset'}`;
  }
  return null;
}
