/**
 * `npm run bench [-- --quick] [--vs-torch] [--only a,b] [--out file.json]`: runs every benchmark
 * section, prints one table (ours beside each anchor, and the ratio) and writes the rows as JSON.
 * With --vs-torch the PyTorch/scipy workloads (bench/torch_ref.py, Debian's /usr/bin/python3) run
 * in the same process tree first, so ratios are measured side by side instead of quoted.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { currentBackend } from '../src/core/backend/index.js';
import { nativeAddon, supportedGemmPaths } from '../src/core/backend/native.js';
import type { BenchContext, BenchRow } from './harness.js';
import type { TorchFigures } from './training.js';

type Section = (ctx: BenchContext, torch?: TorchFigures) => Promise<BenchRow[]>;

/** Section name → module (relative to this file); each exports `run`. */
const SECTIONS: Record<string, string> = {
  training: './training.js',
  kernels: './kernels-native.js',
  backends: './backends.js',
  sinkhorn: './sinkhorn.js',
  assignment: './assignment.js',
  rebasin: './rebasin.js',
  continual: './continual.js',
  lazy: './lazy.js',
  transformer: './transformer.js',
};

function parse(argv: string[]) {
  const opts = { quick: false, vsTorch: false, only: null as string[] | null, out: 'bench-results/bench.json' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') opts.quick = true;
    else if (a === '--vs-torch') opts.vsTorch = true;
    else if (a === '--only') opts.only = (argv[++i] ?? '').split(',');
    else if (a === '--out') opts.out = argv[++i];
    else throw new Error(`bench: unknown option ${a} (options: --quick --vs-torch --only a,b --out file)`);
  }
  if (opts.only) for (const s of opts.only) if (!SECTIONS[s]) throw new Error(`bench: unknown section "${s}" (have ${Object.keys(SECTIONS).join(', ')})`);
  return opts;
}

function runTorch(quick: boolean, withRebasin: boolean): TorchFigures | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  const script = resolve(here, '../../bench/torch_ref.py');
  const py = '/usr/bin/python3';
  if (!existsSync(py)) return undefined;
  process.stderr.write('bench: timing the PyTorch/scipy reference workloads…\n');
  const r = spawnSync(py, [script, ...(withRebasin ? ['--rebasin'] : []), ...(quick ? ['--quick'] : [])], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) {
    process.stderr.write(`bench: --vs-torch needs Debian's python3-torch and python3-scipy (apt-get install python3-torch python3-scipy); the reference run failed:\n${r.stderr.slice(-800)}\n`);
    return undefined;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TorchFigures;
}

function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function printTable(rows: BenchRow[]): void {
  const header = ['section', 'measurement', 'ours', 'unit', 'anchor', 'anchor source', 'ratio', 'goal'];
  const body = rows.map((r) => {
    let ratio: number | undefined;
    if (r.anchor !== undefined) ratio = r.higherIsBetter === false ? r.anchor / r.value : r.value / r.anchor;
    return [r.section, r.name, fmt(r.value), r.unit, fmt(r.anchor), r.anchor !== undefined ? `${r.anchorSource}: ${r.anchorLabel ?? ''}` : '', ratio !== undefined ? `${ratio.toFixed(2)}×` : '', r.goal ?? ''];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |';
  console.log(line(header));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const b of body) console.log(line(b));
  console.log('\nratio = ours/anchor for rates, anchor/ours for times (above 1 is better for us).');
}

async function main(): Promise<void> {
  const opts = parse(process.argv.slice(2));
  const ctx: BenchContext = { quick: opts.quick, vsTorch: opts.vsTorch, log: (m) => process.stderr.write(m + '\n') };
  // The end-to-end PyTorch workloads take minutes: only when the rebasin section runs.
  const torch = opts.vsTorch ? runTorch(opts.quick, !opts.only || opts.only.includes('rebasin')) : undefined;
  const rows: BenchRow[] = [];
  for (const [name, mod] of Object.entries(SECTIONS)) {
    if (opts.only && !opts.only.includes(name)) continue;
    const here = dirname(fileURLToPath(import.meta.url));
    if (!existsSync(join(here, mod))) continue; // a section not built yet
    process.stderr.write(`bench: ${name}…\n`);
    const section = (await import(mod)) as { run: Section };
    const got = await section.run(ctx, torch);
    rows.push(...got);
    // Partial results survive an interrupted run: the JSON is rewritten after every section.
    writeResults(opts.out, opts.quick, torch, rows);
    process.stderr.write(`bench: ${name} done (${got.length} rows)\n`);
  }
  const cpu = cpuInfo();
  console.log(`CPU: ${cpu.model ?? 'unknown'}${cpu.features ? ` (${cpu.features.join(', ')})` : ''}; sgemm ${cpu.gemm ?? '-'}${cpu.gemmForced ? ` (${cpu.gemmForced})` : ''}, conv ${cpu.conv ?? '-'}; ${cpus().length} logical cores; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}; backend ${currentBackend().name}\n`);
  printTable(rows);
  console.log(`wrote ${writeResults(opts.out, opts.quick, torch, rows)}`);
}

/**
 * The CPU the figures come from: model, the vector features that decide the sgemm path (from
 * /proc/cpuinfo where there is one), the paths it runs and the one in use.
 */
function cpuInfo() {
  const wanted = ['avx2', 'fma', 'avx512f', 'avx512vl', 'avx512dq', 'avx512bw'];
  let flags: string[] | null = null;
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    const have = new Set(line?.split(':')[1]?.trim().split(/\s+/) ?? []);
    flags = wanted.filter((f) => have.has(f));
  } catch {
    // not Linux: features unknown
  }
  const native = currentBackend().name === 'native';
  const gemm = native ? nativeAddon()?.gemmImpl() ?? null : null;
  // The CPU kind the figures describe: an AVX2 path forced on an AVX-512 CPU is labelled as such,
  // never as an AVX2-only CPU's figures.
  const kind = flags === null ? null : flags.includes('avx512f') ? 'avx512' : flags.includes('avx2') && flags.includes('fma') ? 'avx2' : 'other';
  return {
    model: cpus()[0]?.model ?? null, features: flags, kind,
    gemmPaths: native ? supportedGemmPaths() : [], gemm,
    gemmForced: gemm !== null && kind === 'avx512' && gemm === 'avx2' ? 'the AVX2 kernels forced on an AVX-512 CPU' : null,
    conv: native ? nativeAddon()?.convStrategy() ?? null : null,
    env: { REBASIN_GEMM: process.env.REBASIN_GEMM ?? null, REBASIN_CONV: process.env.REBASIN_CONV ?? null },
  };
}

function writeResults(path: string, quick: boolean, torch: TorchFigures | undefined, rows: BenchRow[]): string {
  const out = resolve(path);
  mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify({ date: new Date().toISOString(), backend: { name: currentBackend().name, ...currentBackend().info }, cpu: cpuInfo(), node: process.version, loadAverage: loadavg(), quick, torch: torch ?? null, rows }, null, 2));
  renameSync(tmp, out);
  return out;
}

main().catch((e: Error) => {
  console.error(e.message);
  process.exitCode = 1;
});
