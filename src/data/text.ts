/**
 * Real text that installs offline: the licence texts every Debian system ships in
 * /usr/share/common-licenses (package base-files, ~250 KB of English), as a character-level
 * language-modelling set. A sample is a window of `context` characters (token ids as floats) and
 * its labels the next character at each position. Held out by document: the test split is whole
 * licences the training split never sees.
 */
import { readdirSync, readFileSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors.js';
import type { Dataset } from './dataset.js';
import type { SplitName } from './mnist.js';

export const LICENSE_TEXT_DIR = '/usr/share/common-licenses';
/** Whole documents held out as the test split (~12% of the characters). */
export const LICENSE_TEST_FILES = ['GPL-1', 'MPL-2.0', 'CC0-1.0'];

/** Newline, then printable ASCII ' '..'~'; anything else reads as '?'. */
export const TEXT_VOCAB = ['\n', ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i))];
const UNKNOWN = TEXT_VOCAB.indexOf('?');

/** Token id of a character. */
export function charId(c: string): number {
  if (c === '\n') return 0;
  const k = c.charCodeAt(0);
  return k >= 32 && k <= 126 ? k - 31 : UNKNOWN;
}

export interface TextOptions {
  /** Folder of plain-text files (default LICENSE_TEXT_DIR); symlinks are skipped (Debian's GPL → GPL-3). */
  dataDir?: string;
  /** Characters per sample (default 64). */
  context?: number;
  /** Keep only the first `limit` windows. */
  limit?: number;
}

/**
 * Windows of a character stream: train windows start every context/2 characters (overlapping
 * halves), test windows every `context` (each character scored once).
 */
export function loadLicenseText(split: SplitName, opts: TextOptions = {}): Dataset {
  const dir = opts.dataDir ?? LICENSE_TEXT_DIR;
  const T = opts.context ?? 64;
  if (!(Number.isInteger(T) && T >= 2)) throw new InputError(`text: context must be an integer ≥ 2, got ${T}`);
  let names: string[];
  try {
    names = readdirSync(dir).filter((f) => lstatSync(join(dir, f)).isFile()).sort();
  } catch (e) {
    throw new InputError(`text: cannot read ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); on Debian it is part of base-files`);
  }
  const picked = names.filter((f) => LICENSE_TEST_FILES.includes(f) === (split === 'test'));
  if (!picked.length) throw new InputError(`text: no ${split} documents in ${dir} (the test split is ${LICENSE_TEST_FILES.join(', ')})`);
  const docs = picked.map((f) => readFileSync(join(dir, f), 'latin1'));
  const stride = split === 'train' ? T / 2 : T;
  const starts: [number, number][] = [];
  docs.forEach((d, k) => { for (let s = 0; s + T + 1 <= d.length; s += Math.floor(stride)) starts.push([k, s]); });
  const n = Math.min(starts.length, opts.limit ?? starts.length);
  const x = new Float32Array(n * T);
  const y = new Int32Array(n * T);
  for (let i = 0; i < n; i++) {
    const [k, s] = starts[i];
    const d = docs[k];
    for (let t = 0; t < T; t++) {
      x[i * T + t] = charId(d[s + t]);
      y[i * T + t] = charId(d[s + t + 1]);
    }
  }
  return { name: `text-${split}`, x, y, sampleShape: [T], n, numClasses: TEXT_VOCAB.length };
}
