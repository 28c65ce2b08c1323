/** The differentiable op set, PyTorch-functional style: `F.relu(F.linear(x, w, b))`. */
export * from './elementwise.js';
export * from './reduce.js';
export * from './shape.js';
export * from './linalg.js';
export * from './nn.js';
export * from './activation.js';
export * from './spatial.js';
export * from './norm.js';
