/**
 * Dependency-free SVG charts: line plots (several series, optional log y axis, legend) in a grid of
 * panels, and heat maps. Output is a self-contained SVG string that any browser shows.
 */

export interface Series {
  label: string;
  x: number[];
  y: number[];
  color?: string;
  dashed?: boolean;
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logY?: boolean;
  yMin?: number;
  yMax?: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];

export function colorFor(i: number): string {
  return PALETTE[i % PALETTE.length];
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const span = hi - lo;
  const step0 = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count + 0.5) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function fmtTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0);
  return String(+v.toPrecision(4));
}

/** One panel drawn at (ox, oy) with size w×h; returns SVG elements. */
function drawPanel(p: Panel, ox: number, oy: number, w: number, h: number): string {
  const m = { l: 62, r: 12, t: 28, b: 42 };
  const pw = w - m.l - m.r;
  const ph = h - m.t - m.b;
  const tf = (y: number) => (p.logY ? Math.log10(Math.max(y, 1e-12)) : y);
  const xs = p.series.flatMap((s) => s.x).filter(Number.isFinite);
  const ys = p.series.flatMap((s) => s.y).filter((v) => Number.isFinite(v) && (!p.logY || v > 0)).map(tf);
  let x0 = xs.length ? Math.min(...xs) : 0;
  let x1 = xs.length ? Math.max(...xs) : 1;
  let y0 = p.yMin !== undefined ? tf(p.yMin) : ys.length ? Math.min(...ys) : 0;
  let y1 = p.yMax !== undefined ? tf(p.yMax) : ys.length ? Math.max(...ys) : 1;
  if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  if (p.yMin === undefined) y0 -= pad;
  if (p.yMax === undefined) y1 += pad;
  const sx = (x: number) => ox + m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => oy + m.t + ph - ((tf(y) - y0) / (y1 - y0)) * ph;
  const out: string[] = [];
  out.push(`<text x="${ox + m.l + pw / 2}" y="${oy + 18}" text-anchor="middle" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
  out.push(`<rect x="${ox + m.l}" y="${oy + m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  for (const t of niceTicks(x0, x1)) {
    const x = sx(t);
    out.push(`<line x1="${x}" y1="${oy + m.t + ph}" x2="${x}" y2="${oy + m.t + ph + 4}" stroke="#444"/><text x="${x}" y="${oy + m.t + ph + 16}" text-anchor="middle" font-size="10">${fmtTick(t)}</text>`);
    out.push(`<line x1="${x}" y1="${oy + m.t}" x2="${x}" y2="${oy + m.t + ph}" stroke="#eee"/>`);
  }
  const yt = niceTicks(y0, y1);
  for (const t of yt) {
    const y = oy + m.t + ph - ((t - y0) / (y1 - y0)) * ph;
    const label = p.logY ? fmtTick(Math.pow(10, t)) : fmtTick(t);
    out.push(`<line x1="${ox + m.l - 4}" y1="${y}" x2="${ox + m.l}" y2="${y}" stroke="#444"/><text x="${ox + m.l - 6}" y="${y + 3}" text-anchor="end" font-size="10">${label}</text>`);
    out.push(`<line x1="${ox + m.l}" y1="${y}" x2="${ox + m.l + pw}" y2="${y}" stroke="#eee"/>`);
  }
  out.push(`<text x="${ox + m.l + pw / 2}" y="${oy + h - 8}" text-anchor="middle" font-size="11">${esc(p.xLabel)}</text>`);
  out.push(`<text x="${ox + 14}" y="${oy + m.t + ph / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 ${ox + 14} ${oy + m.t + ph / 2})">${esc(p.yLabel)}${p.logY ? ' (log)' : ''}</text>`);
  out.push(`<clipPath id="c${ox}_${oy}"><rect x="${ox + m.l}" y="${oy + m.t}" width="${pw}" height="${ph}"/></clipPath>`);
  p.series.forEach((s, i) => {
    const color = s.color ?? colorFor(i);
    const pts: string[] = [];
    for (let k = 0; k < s.x.length; k++) {
      const y = s.y[k];
      if (!Number.isFinite(y) || (p.logY && y <= 0)) continue;
      pts.push(`${sx(s.x[k]).toFixed(1)},${sy(y).toFixed(1)}`);
    }
    if (pts.length) {
      out.push(`<polyline clip-path="url(#c${ox}_${oy})" fill="none" stroke="${color}" stroke-width="1.8"${s.dashed ? ' stroke-dasharray="5,3"' : ''} points="${pts.join(' ')}"/>`);
      if (pts.length <= 40) for (const pt of pts) { const [x, y] = pt.split(','); out.push(`<circle cx="${x}" cy="${y}" r="2" fill="${color}"/>`); }
    }
  });
  // Legend, top-right inside the plot.
  const lx = ox + m.l + pw - 8;
  p.series.forEach((s, i) => {
    const y = oy + m.t + 12 + i * 14;
    const color = s.color ?? colorFor(i);
    out.push(`<line x1="${lx - 110}" y1="${y - 3}" x2="${lx - 94}" y2="${y - 3}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5,3"' : ''}/><text x="${lx - 90}" y="${y}" font-size="10">${esc(s.label)}</text>`);
  });
  return out.join('\n');
}

/** Panels laid out in a grid of `cols` columns. */
export function linePlots(panels: Panel[], opts: { cols?: number; panelWidth?: number; panelHeight?: number; title?: string } = {}): string {
  const cols = Math.max(1, Math.min(opts.cols ?? 2, panels.length));
  const w = opts.panelWidth ?? 460;
  const h = opts.panelHeight ?? 300;
  const top = opts.title ? 30 : 0;
  const rows = Math.ceil(panels.length / cols);
  const W = cols * w;
  const H = rows * h + top;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  if (opts.title) parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(opts.title)}</text>`);
  panels.forEach((p, i) => parts.push(drawPanel(p, (i % cols) * w, top + Math.floor(i / cols) * h, w, h)));
  parts.push('</svg>');
  return parts.join('\n');
}

/** A heat map of a matrix (rows × cols) with values printed in the cells. */
export function heatMap(title: string, matrix: number[][], opts: { rowLabel?: string; colLabel?: string; min?: number; max?: number; cell?: number } = {}): string {
  const rows = matrix.length;
  const cols = rows ? Math.max(...matrix.map((r) => r.length)) : 0;
  const cell = opts.cell ?? Math.max(14, Math.min(40, Math.floor(600 / Math.max(cols, 1))));
  const m = { l: 50, t: 40, r: 20, b: 40 };
  const W = m.l + cols * cell + m.r;
  const H = m.t + rows * cell + m.b;
  const vals = matrix.flat().filter(Number.isFinite);
  const lo = opts.min ?? (vals.length ? Math.min(...vals) : 0);
  const hi = opts.max ?? (vals.length ? Math.max(...vals) : 1);
  const color = (v: number) => {
    if (!Number.isFinite(v)) return '#f4f4f4';
    const t = hi > lo ? Math.min(1, Math.max(0, (v - lo) / (hi - lo))) : 0.5;
    // white → blue
    const r = Math.round(255 - t * 225);
    const g = Math.round(255 - t * 155);
    const b = Math.round(255 - t * 40);
    return `rgb(${r},${g},${b})`;
  };
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  parts.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = matrix[i][j];
      const x = m.l + j * cell;
      const y = m.t + i * cell;
      parts.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${color(v)}" stroke="#fff"/>`);
      if (cell >= 22 && Number.isFinite(v)) parts.push(`<text x="${x + cell / 2}" y="${y + cell / 2 + 3}" text-anchor="middle" font-size="${Math.min(10, cell / 3)}">${(Math.abs(v) <= 1 ? v * 100 : v).toFixed(0)}</text>`);
    }
  }
  if (opts.rowLabel) parts.push(`<text x="14" y="${m.t + (rows * cell) / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 14 ${m.t + (rows * cell) / 2})">${esc(opts.rowLabel)}</text>`);
  if (opts.colLabel) parts.push(`<text x="${m.l + (cols * cell) / 2}" y="${H - 12}" font-size="11" text-anchor="middle">${esc(opts.colLabel)}</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}
