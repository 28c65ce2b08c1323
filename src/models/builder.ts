/** A small helper the architecture builders use to emit ModelGraph nodes in order. */
import type { GraphNode, ModelGraph } from './graph.js';

export class GraphBuilder {
  readonly nodes: GraphNode[] = [];

  /** Adds a node of any layer kind and returns its id (the next node's input); the methods below are shorthands. */
  node(n: GraphNode): string {
    this.nodes.push(n);
    return n.id;
  }

  input(shape: number[], id = 'input'): string {
    return this.node({ op: 'input', id, shape: [...shape] });
  }

  /** PyTorch nn.Linear at module path `id` (`id.weight`, `id.bias`). */
  linear(id: string, input: string, inFeatures: number, outFeatures: number, bias = true): string {
    return this.node({ op: 'linear', id, input, weight: `${id}.weight`, bias: bias ? `${id}.bias` : null, inFeatures, outFeatures });
  }

  /** PyTorch nn.Conv2d (square kernel) at module path `id`. */
  conv(id: string, input: string, inChannels: number, outChannels: number, kernel: number, stride: number, padding: number, bias: boolean): string {
    return this.node({
      op: 'conv2d', id, input, weight: `${id}.weight`, bias: bias ? `${id}.bias` : null,
      inChannels, outChannels, kernel, stride, padding,
    });
  }

  /** PyTorch nn.BatchNorm1d/2d at module path `id` (defaults eps 1e-5, momentum 0.1). */
  batchNorm(id: string, input: string, channels: number): string {
    return this.node({
      op: 'batchnorm', id, input, channels,
      weight: `${id}.weight`, bias: `${id}.bias`, runningMean: `${id}.running_mean`, runningVar: `${id}.running_var`,
      eps: 1e-5, momentum: 0.1,
    });
  }

  act(id: string, input: string, op: 'relu' | 'tanh'): string {
    return this.node({ op, id, input });
  }

  dropout(id: string, input: string, p: number): string {
    if (!(p >= 0 && p < 1)) throw new Error(`dropout "${id}": p must be in [0, 1), got ${p}`);
    return this.node({ op: 'dropout', id, input, p });
  }

  maxPool(id: string, input: string, kernel: number, stride = kernel, padding = 0): string {
    return this.node({ op: 'maxpool2d', id, input, kernel, stride, padding });
  }

  avgPool(id: string, input: string, kernel: number, stride = kernel, padding = 0): string {
    return this.node({ op: 'avgpool2d', id, input, kernel, stride, padding });
  }

  adaptiveAvgPool(id: string, input: string, size: [number, number]): string {
    return this.node({ op: 'adaptiveavgpool2d', id, input, size });
  }

  add(id: string, inputs: string[]): string {
    return this.node({ op: 'add', id, inputs });
  }

  flatten(id: string, input: string, inner: number): string {
    return this.node({ op: 'flatten', id, input, inner });
  }

  output(input: string, id = 'output'): string {
    return this.node({ op: 'output', id, input });
  }

  build(): ModelGraph {
    return { nodes: this.nodes };
  }
}

/** Spatial size after a conv/pool window. */
export function outSize(size: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((size + 2 * padding - kernel) / stride) + 1;
}

/** Channels scaled by a width multiplier (at least 1). */
export function scaled(channels: number, w: number): number {
  if (!(w > 0)) throw new Error(`width multiplier must be positive, got ${w}`);
  return Math.max(1, Math.round(channels * w));
}
