import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCifar10, loadCifar100 } from '../src/data/cifar.js';

const PIX = 3072;

/** Pixel byte for record r, channel c, row y, col x: distinct enough to catch layout mix-ups. */
const pixel = (r: number, c: number, y: number, x: number) => (r * 31 + c * 85 + y * 7 + x * 3) % 256;

function records(labels: number[][]): Buffer {
  const lb = labels[0].length;
  const b = Buffer.alloc(labels.length * (lb + PIX));
  labels.forEach((ls, r) => {
    const off = r * (lb + PIX);
    ls.forEach((l, k) => (b[off + k] = l));
    for (let c = 0; c < 3; c++) for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) b[off + lb + c * 1024 + y * 32 + x] = pixel(r, c, y, x);
  });
  return b;
}

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'rebasin-cifar-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function checkPixels(x: Float32Array, sample: number, record: number): void {
  for (const [c, y, xx] of [[0, 0, 0], [1, 5, 9], [2, 31, 31], [2, 0, 17], [0, 31, 0]]) {
    assert.equal(x[sample * PIX + c * 1024 + y * 32 + xx], Math.fround(pixel(record, c, y, xx) / 255), `sample ${sample} c${c} (${y},${xx})`);
  }
}

test('CIFAR-10: train concatenates 5 batches in order, test reads test_batch; channel-major [3,32,32]', () => {
  withDir((dir) => {
    const sub = join(dir, 'cifar-10-batches-bin'); // the folder the official tarball extracts to
    mkdirSync(sub);
    for (let b = 1; b <= 5; b++) writeFileSync(join(sub, `data_batch_${b}.bin`), records([[b], [(b + 4) % 10]]));
    writeFileSync(join(sub, 'test_batch.bin'), records([[9], [0], [3]]));
    const tr = loadCifar10(dir, 'train');
    assert.equal(tr.n, 10);
    assert.deepEqual(tr.sampleShape, [3, 32, 32]);
    assert.equal(tr.numClasses, 10);
    assert.deepEqual(Array.from(tr.y), [1, 5, 2, 6, 3, 7, 4, 8, 5, 9]);
    checkPixels(tr.x, 0, 0);
    checkPixels(tr.x, 3, 1); // batch 2, record 1
    const te = loadCifar10(sub, 'test', { limit: 2 });
    assert.equal(te.n, 2);
    assert.deepEqual(Array.from(te.y), [9, 0]);
    checkPixels(te.x, 1, 1);
    assert.equal(te.classNames?.[9], 'truck');
  });
});

test('CIFAR-100: fine and coarse labels from train.bin/test.bin', () => {
  withDir((dir) => {
    writeFileSync(join(dir, 'train.bin'), records([[19, 99], [0, 42], [7, 3]]));
    writeFileSync(join(dir, 'test.bin'), records([[4, 55]]));
    writeFileSync(join(dir, 'coarse_label_names.txt'), Array.from({ length: 20 }, (_, i) => `coarse${i}`).join('\n') + '\n');
    const fine = loadCifar100(dir, 'train');
    assert.deepEqual(Array.from(fine.y), [99, 42, 3]);
    assert.equal(fine.numClasses, 100);
    checkPixels(fine.x, 2, 2);
    const coarse = loadCifar100(dir, 'train', { labels: 'coarse' });
    assert.deepEqual(Array.from(coarse.y), [19, 0, 7]);
    assert.equal(coarse.numClasses, 20);
    assert.equal(coarse.classNames?.[19], 'coarse19');
    assert.deepEqual(Array.from(loadCifar100(dir, 'test').y), [55]);
  });
});

test('CIFAR errors: missing folder/file, bad size, label out of range', () => {
  withDir((dir) => {
    assert.throws(() => loadCifar10(join(dir, 'absent'), 'train'), /CIFAR-10: data folder .*absent does not exist/);
    assert.throws(() => loadCifar10(dir, 'test'), /CIFAR-10: missing file .*test_batch\.bin/);
    for (let b = 1; b <= 4; b++) writeFileSync(join(dir, `data_batch_${b}.bin`), records([[1]]));
    assert.throws(() => loadCifar10(dir, 'train'), /missing file .*data_batch_5\.bin/);
    writeFileSync(join(dir, 'test_batch.bin'), records([[1], [2]]).subarray(0, 5000));
    assert.throws(() => loadCifar10(dir, 'test'), /test_batch\.bin: size 5000 bytes is not a positive multiple of the 3073-byte CIFAR-10 record/);
    writeFileSync(join(dir, 'test_batch.bin'), records([[1], [10]]));
    assert.throws(() => loadCifar10(dir, 'test'), /test_batch\.bin: record 1 has label 10, outside \[0, 10\)/);
    writeFileSync(join(dir, 'train.bin'), records([[3, 100]]));
    assert.throws(() => loadCifar100(dir, 'train'), /train\.bin: record 0 has label 100, outside \[0, 100\)/);
    assert.equal(loadCifar100(dir, 'train', { labels: 'coarse' }).y[0], 3);
    writeFileSync(join(dir, 'test.bin'), records([[1]])); // a CIFAR-10-sized record
    assert.throws(() => loadCifar100(dir, 'test'), /test\.bin: size 3073 bytes is not a positive multiple of the 3074-byte CIFAR-100 record/);
  });
});
