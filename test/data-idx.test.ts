import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { loadIdxPair, parseIdxImages, parseIdxLabels } from '../src/data/idx.js';

function idxImages(count: number, rows: number, cols: number, fill = (i: number) => i % 256, headerCount = count): Buffer {
  const b = Buffer.alloc(16 + count * rows * cols);
  b.writeUInt32BE(2051, 0);
  b.writeUInt32BE(headerCount, 4);
  b.writeUInt32BE(rows, 8);
  b.writeUInt32BE(cols, 12);
  for (let i = 0; i < count * rows * cols; i++) b[16 + i] = fill(i);
  return b;
}

function idxLabels(labels: number[]): Buffer {
  const b = Buffer.alloc(8 + labels.length);
  b.writeUInt32BE(2049, 0);
  b.writeUInt32BE(labels.length, 4);
  labels.forEach((l, i) => (b[8 + i] = l));
  return b;
}

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-idx-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('IDX pair loads raw and gzipped files, scaled to [0,1]', () => {
  withDir((dir) => {
    const img = idxImages(3, 2, 4, (i) => (i * 37) % 256);
    writeFileSync(join(dir, 'img'), img);
    writeFileSync(join(dir, 'img.gz'), gzipSync(img));
    writeFileSync(join(dir, 'lab'), idxLabels([4, 0, 9]));
    writeFileSync(join(dir, 'lab.gz'), gzipSync(idxLabels([4, 0, 9])));
    for (const sfx of ['', '.gz']) {
      const ds = loadIdxPair(join(dir, 'img' + sfx), join(dir, 'lab' + sfx), { name: 't' });
      assert.equal(ds.n, 3);
      assert.deepEqual(ds.sampleShape, [1, 2, 4]);
      assert.deepEqual(Array.from(ds.y), [4, 0, 9]);
      for (let i = 0; i < 24; i++) assert.equal(ds.x[i], Math.fround(((i * 37) % 256) / 255));
    }
    const all = loadIdxPair(join(dir, 'img'), join(dir, 'lab'));
    for (const sfx of ['', '.gz']) {
      const lim = loadIdxPair(join(dir, 'img' + sfx), join(dir, 'lab' + sfx), { limit: 2, layout: 'flat' });
      assert.equal(lim.n, 2);
      assert.deepEqual(lim.sampleShape, [8]);
      assert.equal(lim.x.length, 16);
      assert.deepEqual(lim.x, all.x.subarray(0, 16));
      assert.deepEqual(lim.y, all.y.subarray(0, 2));
    }
    const nrm = loadIdxPair(join(dir, 'img'), join(dir, 'lab'), { normalize: { mean: 0.5, std: 0.25 } });
    assert.ok(Math.abs(nrm.x[1] - (37 / 255 - 0.5) / 0.25) < 1e-6);
  });
});

test('IDX errors name the file and say what was expected', () => {
  withDir((dir) => {
    const good = idxImages(4, 28, 28);
    const trunc = join(dir, 'train-images-idx3-ubyte');
    writeFileSync(trunc, good.subarray(0, 1000));
    assert.throws(() => parseIdxImages(good.subarray(0, 1000), trunc), (e: Error) =>
      e.message.includes('train-images-idx3-ubyte') && e.message.includes('expected 3152 bytes for 4×28×28 images, file has 1000 bytes (truncated?)'));

    const labPath = join(dir, 'labels-as-images');
    writeFileSync(labPath, idxLabels([1, 2, 3]));
    assert.throws(() => loadIdxPair(labPath, labPath), (e: Error) =>
      e.message.includes('labels-as-images') && /expected IDX images magic 2051 \(0x00000803\), found 2049/.test(e.message));

    const imgPath = join(dir, 'imgs');
    writeFileSync(imgPath, good);
    const fewLabels = join(dir, 'few-labels');
    writeFileSync(fewLabels, idxLabels([1, 2, 3]));
    assert.throws(() => loadIdxPair(imgPath, fewLabels), (e: Error) =>
      e.message.includes('imgs has 4 images') && e.message.includes('few-labels has 3 labels') && e.message.includes('mismatch'));

    // Header count disagrees with the payload (extra bytes).
    assert.throws(() => parseIdxImages(idxImages(4, 28, 28, undefined, 3), 'hdr-file'), /hdr-file: expected 2368 bytes for 3×28×28 images, file has 3152 bytes/);
    assert.throws(() => parseIdxLabels(idxLabels([1, 2]).subarray(0, 9), 'lab-file'), /lab-file: expected 10 bytes for 2 labels, file has 9 bytes \(truncated\?\)/);
    assert.throws(() => parseIdxLabels(Buffer.from([0, 0]), 'tiny'), /tiny: file has 2 bytes, shorter than the 8-byte IDX labels header/);

    const badLabel = join(dir, 'bad-label');
    writeFileSync(badLabel, idxLabels([1, 12, 3, 0]));
    assert.throws(() => loadIdxPair(imgPath, badLabel), /bad-label: label 12 at index 1 is outside \[0, 10\)/);

    const corrupt = join(dir, 'corrupt.gz');
    writeFileSync(corrupt, gzipSync(good).subarray(0, 100));
    assert.throws(() => loadIdxPair(corrupt, fewLabels), /corrupt\.gz: gzip data is corrupt or truncated/);
    assert.throws(() => loadIdxPair(join(dir, 'nope'), fewLabels), /nope: cannot read \(ENOENT\)/);
  });
});
