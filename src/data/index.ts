// Data layer: datasets and helpers, loaders (IDX/MNIST/Fashion-MNIST/CIFAR), Rotated MNIST, synthetic tasks.
export * from './dataset.js';
export * from './idx.js';
export * from './mnist.js';
export * from './cifar.js';
export * from './rotate.js';
export * from './polynomial.js';
export * from './synthetic.js';
export * from './text.js';
