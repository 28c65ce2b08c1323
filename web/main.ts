/**
 * The page: picks/drops the files, starts the alignment in a worker (worker.ts), shows progress,
 * the cost curve, which units moved, the equivalence check, and offers the aligned file. Cancel
 * ends the worker and starts a fresh one; errors are shown in the page, never only in the console.
 */
import { linePlots } from '../src/report/svg.js';
import { DEMO_METHODS, type AlignMethod, type AlignRequest, type AlignSummary, type DemoMethod, type WorkerMessage } from './protocol.js';

/** Larger inputs than this (both files together) are refused up front: the CLI's --lazy mode handles them. */
const MAX_BYTES = 1.5 * 2 ** 30;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const files: { a: File | null; b: File | null; spec: File | null; onnx: File | null } = { a: null, b: null, spec: null, onnx: null };
let worker: Worker | null = null;
/** What the worker is doing (one job at a time). */
let busy: 'align' | 'demo' | null = null;
let demoPoints: Record<DemoMethod, { lambda: number; loss: number; accuracy: number }[]> = { naive: [], wm: [], 'sinkhorn-mid': [] };
let costs: { step: number; cost: number }[] = [];
let downloadUrl: string | null = null;

function status(text: string): void {
  $('status').textContent = text;
}

function showError(text: string): void {
  $('error').textContent = text;
}

function startWorker(): void {
  worker = new Worker(`worker.js${location.search}`); // the worker reads the page's options (?simd=off)
  worker.onmessage = (e: MessageEvent<WorkerMessage>) => onMessage(e.data);
  worker.onerror = (e) => {
    e.preventDefault();
    const was = busy;
    finish();
    const msg = `the worker stopped: ${e.message || 'unknown error'}; nothing was downloaded. Try again.`;
    if (was === 'demo') $('demo-error').textContent = msg;
    else showError(msg);
    restartWorker();
  };
}

function restartWorker(): void {
  worker?.terminate();
  startWorker();
}

function onMessage(m: WorkerMessage): void {
  switch (m.type) {
    case 'ready':
      $('backend').textContent = `${m.backend} — ${m.detail}`;
      $('backend').dataset.backend = m.backend;
      $('backend-note').textContent = m.note ?? '';
      break;
    case 'progress':
      costs.push({ step: m.step, cost: m.cost });
      status(`step ${m.step}: cost ${m.cost.toPrecision(5)}`);
      if (method() === 'sinkhorn-l2') {
        const p = $<HTMLProgressElement>('progress');
        p.max = Number($<HTMLInputElement>('steps').value) || 1;
        p.value = m.step;
      }
      drawCosts();
      break;
    case 'done':
      finish();
      showResult(m.bytes, m.summary);
      break;
    case 'error':
      if (busy === 'demo') {
        finish();
        $('demo-error').textContent = m.message;
        break;
      }
      finish();
      showError(m.message);
      status('Failed; nothing was downloaded.');
      break;
    case 'demo-progress':
      $('demo-status').textContent = m.text;
      $<HTMLProgressElement>('demo-progress').value = m.fraction;
      break;
    case 'demo-point':
      demoPoints[m.method].push({ lambda: m.lambda, loss: m.loss, accuracy: m.accuracy });
      drawDemo();
      break;
    case 'demo-done': {
      finish();
      $<HTMLProgressElement>('demo-progress').value = 1;
      $('demo-status').textContent = `Done in ${m.seconds.toFixed(1)} s. Test accuracy of A ${(100 * m.endpoints.accA).toFixed(2)}%, B ${(100 * m.endpoints.accB).toFixed(2)}%.`;
      const rows = DEMO_METHODS.map((k) => `<tr><td>${k}</td><td>${m.barriers[k].loss.toFixed(4)}</td><td>${(100 * m.barriers[k].accuracy).toFixed(2)}%</td></tr>`).join('');
      $('demo-summary').innerHTML = `<table id="demo-barriers"><tr><th>method</th><th>loss barrier</th><th>accuracy barrier</th></tr>${rows}</table>`;
      break;
    }
  }
}

function method(): AlignMethod {
  return $<HTMLSelectElement>('method').value as AlignMethod;
}

function drawCosts(): void {
  const svg = $('cost-plot');
  if (costs.length === 0) { svg.innerHTML = ''; return; }
  const W = 600, H = 160, L = 60, R = 10, T = 20, B = 25;
  const xs = costs.map((c) => c.step), ys = costs.map((c) => c.cost);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-12);
  const px = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const pts = costs.map((c) => `${px(c.step).toFixed(1)},${py(c.cost).toFixed(1)}`).join(' ');
  svg.innerHTML = `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#ccc"/>`
    + `<polyline points="${pts}" fill="none" stroke="#1f77b4" stroke-width="2"/>`
    + `<text x="${L}" y="13">cost (${method() === 'wm' ? 'matching objective' : 'soft L2 cost'})</text>`
    + `<text x="${L - 4}" y="${T + 4}" text-anchor="end">${y1.toPrecision(3)}</text><text x="${L - 4}" y="${H - B}" text-anchor="end">${y0.toPrecision(3)}</text>`
    + `<text x="${L}" y="${H - 8}">step ${x0}</text><text x="${W - R}" y="${H - 8}" text-anchor="end">${x1}</text>`;
}

function showResult(bytes: ArrayBuffer, s: AlignSummary): void {
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  const eq = s.equivalence;
  const rows = s.permutations.map((g) => `<tr><td>${escape(g.name)}</td><td>${g.moved}</td><td>${g.size}</td></tr>`).join('');
  $('result').innerHTML = `<p class="ok" id="equivalence">Equivalence check (${eq.kind}): max difference ${eq.maxAbsDiff.toExponential(2)} — ${eq.passed ? 'OK, the aligned B computes the same function as B' : 'FAILED'}</p>`
    + `<p>${s.method} in ${s.seconds.toFixed(2)} s (${s.steps} steps), final cost ${s.finalCost?.toPrecision(5) ?? '-'}</p>`
    + `<table id="groups"><tr><th>permutation group</th><th>units moved</th><th>of</th></tr>${rows}</table>`
    + `<p><a id="download" href="${downloadUrl}" download="${escape(s.outputName)}">Download ${escape(s.outputName)}</a> (${bytes.byteLength >= 2 ** 20 ? `${(bytes.byteLength / 2 ** 20).toFixed(1)} MiB` : `${(bytes.byteLength / 1024).toFixed(1)} KiB`})</p>`;
  status('Done.');
  $<HTMLProgressElement>('progress').value = $<HTMLProgressElement>('progress').max;
}

function escape(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

function finish(): void {
  busy = null;
  for (const id of ['run', 'demo-run']) $<HTMLButtonElement>(id).disabled = false;
  for (const id of ['cancel', 'demo-cancel']) $<HTMLButtonElement>(id).disabled = true;
}

function begin(what: 'align' | 'demo'): void {
  busy = what;
  for (const id of ['run', 'demo-run']) $<HTMLButtonElement>(id).disabled = true;
  $<HTMLButtonElement>(what === 'align' ? 'cancel' : 'demo-cancel').disabled = false;
}

/** Loss and accuracy along the path per method, drawn with the CLI's plot code (report/svg.ts). */
function drawDemo(): void {
  const series = (key: 'loss' | 'accuracy') => DEMO_METHODS.filter((k) => demoPoints[k].length > 0).map((k) => ({
    label: k, x: demoPoints[k].map((p) => p.lambda), y: demoPoints[k].map((p) => p[key]),
  }));
  $('demo-plot').innerHTML = linePlots([
    { title: 'test loss along (1−λ)·A + λ·B', xLabel: 'λ', yLabel: 'loss', series: series('loss') },
    { title: 'test accuracy', xLabel: 'λ', yLabel: 'accuracy', series: series('accuracy') },
  ], { cols: 2, panelWidth: 430, panelHeight: 280 });
}

async function runDemo(): Promise<void> {
  $('demo-error').textContent = '';
  $('demo-summary').innerHTML = '';
  const epochs = Number($<HTMLInputElement>('demo-epochs').value);
  if (!(Number.isInteger(epochs) && epochs >= 1 && epochs <= 50)) { $('demo-error').textContent = 'epochs must be a whole number in [1, 50]'; return; }
  begin('demo');
  $('demo-status').textContent = 'Fetching the MNIST subset…';
  const res = await fetch('mnist-subset.bin');
  if (!res.ok) throw new Error(`the MNIST subset could not be fetched (HTTP ${res.status})`);
  const data = await res.arrayBuffer();
  demoPoints = { naive: [], wm: [], 'sinkhorn-mid': [] };
  drawDemo();
  worker!.postMessage({ type: 'demo', data, epochs }, [data]);
}

async function run(): Promise<void> {
  showError('');
  $('result').innerHTML = '';
  if (!files.a || !files.b) { showError('Choose two safetensors files: A (the reference) and B (the model to align).'); return; }
  if (files.a.size + files.b.size > MAX_BYTES) {
    showError(`These checkpoints (${((files.a.size + files.b.size) / 2 ** 30).toFixed(1)} GiB together) are larger than the page can hold in memory; align them with the CLI instead: rebasin align A.safetensors B.safetensors --lazy -o B_aligned.safetensors`);
    return;
  }
  const tau = Number($<HTMLInputElement>('tau').value);
  const steps = Number($<HTMLInputElement>('steps').value);
  if (method() === 'sinkhorn-l2' && !(tau > 0)) { showError('τ must be > 0'); return; }
  if (method() === 'sinkhorn-l2' && !(Number.isInteger(steps) && steps >= 1)) { showError('steps must be a whole number ≥ 1'); return; }
  const req: AlignRequest = {
    type: 'align', a: await files.a.arrayBuffer(), aName: files.a.name, b: await files.b.arrayBuffer(), bName: files.b.name,
    spec: files.spec ? { name: files.spec.name, text: await files.spec.text() } : null,
    onnx: files.onnx ? { name: files.onnx.name, bytes: await files.onnx.arrayBuffer() } : null, method: method(), seed: Number($<HTMLInputElement>('seed').value) || 0,
    ...(method() === 'sinkhorn-l2' ? { tau, steps } : {}),
  };
  costs = [];
  drawCosts();
  begin('align');
  const p = $<HTMLProgressElement>('progress');
  p.removeAttribute('value'); // indeterminate until steps arrive
  status(`Aligning ${files.b.name} to ${files.a.name} with ${method()}…`);
  worker!.postMessage(req, [req.a, req.b, ...(req.onnx ? [req.onnx.bytes] : [])]);
}

function cancel(): void {
  const was = busy;
  if (!was) return;
  restartWorker();
  finish();
  if (was === 'demo') {
    $<HTMLProgressElement>('demo-progress').value = 0;
    $('demo-status').textContent = 'Cancelled.';
    return;
  }
  $<HTMLProgressElement>('progress').value = 0;
  status('Cancelled; nothing was downloaded.');
}

function assign(list: FileList | null): void {
  for (const f of Array.from(list ?? [])) {
    if (/\.json$/i.test(f.name)) files.spec = f;
    else if (/\.onnx$/i.test(f.name)) files.onnx = f;
    else if (!files.a || (files.a && files.b)) { files.a = f; files.b = null; }
    else files.b = f;
  }
  describe();
}

function describe(): void {
  const names = [files.a && `A: ${files.a.name}`, files.b && `B: ${files.b.name}`, files.onnx && `ONNX: ${files.onnx.name}`, files.spec && `spec: ${files.spec.name}`].filter(Boolean);
  status(names.length ? names.join(' · ') : 'Choose A and B.');
}

function setup(): void {
  startWorker();
  $<HTMLInputElement>('file-a').onchange = (e) => { files.a = (e.target as HTMLInputElement).files?.[0] ?? null; describe(); };
  $<HTMLInputElement>('file-b').onchange = (e) => { files.b = (e.target as HTMLInputElement).files?.[0] ?? null; describe(); };
  $<HTMLInputElement>('file-spec').onchange = (e) => { files.spec = (e.target as HTMLInputElement).files?.[0] ?? null; describe(); };
  $<HTMLInputElement>('file-onnx').onchange = (e) => { files.onnx = (e.target as HTMLInputElement).files?.[0] ?? null; describe(); };
  $('run').onclick = () => { run().catch((e: Error) => { finish(); showError(e.message); }); };
  $('cancel').onclick = cancel;
  $('demo-cancel').onclick = cancel;
  $('demo-run').onclick = () => { runDemo().catch((e: Error) => { finish(); $('demo-error').textContent = e.message; }); };
  const drop = $('drop');
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); assign(e.dataTransfer?.files ?? null); };
  window.addEventListener('error', (e) => showError(`unexpected error: ${e.message}`));
}

setup();
