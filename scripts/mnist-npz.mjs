// Writes the first N MNIST training images as an .npz with x [N, 1, 28, 28] (float32, 0..1) and
// y [N] (labels): the `--data x.npz` format, e.g. for the README's imported-ResNet example.
//   node scripts/mnist-npz.mjs 10000 train10k.npz
import { loadMnist } from '../dist/src/data/mnist.js';
import { writeNpz } from '../dist/src/io/npy.js';

const [count, out] = process.argv.slice(2);
if (!count || !out) {
  process.stderr.write('usage: node scripts/mnist-npz.mjs N out.npz\n');
  process.exit(2);
}
const d = loadMnist('train', { limit: Number(count), layout: 'chw' });
await writeNpz(out, new Map([['x', { shape: [d.n, ...d.sampleShape], data: d.x }], ['y', { shape: [d.n], data: Float32Array.from(d.y) }]]));
process.stdout.write(`wrote ${d.n} images to ${out}\n`);
