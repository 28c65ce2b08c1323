#!/usr/bin/env python3
"""
Exports full-size torchvision classifiers to ONNX the way people export them, for checking
rebasin's ONNX importer against PyTorch (issue 11 item 6). Too large to commit: run it locally.
Needs Debian's python3-torch, python3-torchvision, python3-onnx; run with Debian's Python:

    nice python3 scripts/torchvision-export.py [OUT_DIR] [--models a,b,...] [--verify] [--no-b]

OUT_DIR defaults to rebasin-out/torchvision in this package (gitignored). Models (default all): resnet18, mobilenet_v2,
mobilenet_v3_small, densenet121, convnext_tiny, vit_b_16. Pretrained weights are not available
offline, so each model is torchvision's random init under a fixed seed (A: seed 0, B: seed 1), with
every BatchNorm's affine params and running stats randomised (and LayerNorm affine params, and
ConvNeXt's layer_scale, which torchvision initialises to 1e-6 so that its blocks would be almost
identities) so that a wrong permutation or a mis-folded BN changes the output. Parameters that
torchvision initialises to a single value (zero biases; ViT's class token and its zero head, which
would make the output 0) are drawn from N(0, 0.05): otherwise torch 1.13's exporter deduplicates
the identical initializers into Identity nodes (e.g. features.7.2.block.5.bias =
Identity(features.3.0.block.3.bias) in ConvNeXt), which no trained model has.

For each model NAME it writes into OUT_DIR
  NAME.onnx            PyTorch's default export: torch.onnx.export(model.eval(), x, f) (torch 1.13:
                       TorchScript exporter, opset 14, training=EVAL, constant folding: BatchNorm
                       folded into the preceding Conv, folded weights renamed onnx::Conv_N),
                       dynamic batch axis (input 'input', output 'output')
  NAME_bn.onnx         the same with training=TrainingMode.PRESERVE on the eval-mode model:
                       BatchNormalization nodes and PyTorch parameter names kept. Only for models
                       with BatchNorm (ConvNeXt and ViT have none: their default export is it).
  NAME.safetensors     A's state_dict, PyTorch names (F32; num_batches_tracked I64)
  NAME_b.safetensors   B's state_dict (skipped with --no-b)
  NAME.io.npz          x [2,3,224,224] (seeded normal), y = A eval, y_train = A with BatchNorm on
                       batch statistics (Dropout off; on a copy; only for models with BatchNorm),
                       y_b = B eval (unless --no-b)
  summary.json         per model: files and bytes, seconds to build/export/verify, parameter
                       count, op counts of each .onnx, max abs difference of each .onnx from
                       PyTorch (--verify) and max |y|, or the error if a step failed

--verify runs each .onnx on x with onnx's reference evaluator, or test/fixtures/fixture_lib.py's
TorchOnnxEvaluator where this onnx has none, and prints max |onnx(x) - torch(x)|.

Measured 2026-12-07 (torch 1.13.0a0, torchvision 0.14.1a0, onnx 1.12.0; 2 shared cores, nice,
--verify): all 10 files export and match PyTorch within 7e-6 (max |y| 0.17 to 20); 1.7 GB in all
(vit_b_16 alone 1.04 GB); 2-4 minutes wall, vit_b_16 the longest (~35 s export, ~20 s verify).
"""
import argparse
import copy
import json
import os
import sys
import time
import traceback

import numpy as np
import onnx
import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures'))
from fixture_lib import export_onnx, op_counts, randomise_bn, run_onnx, write_safetensors  # noqa: E402

MODELS = ['resnet18', 'mobilenet_v2', 'mobilenet_v3_small', 'densenet121', 'convnext_tiny', 'vit_b_16']
SEED_A, SEED_B, SEED_X = 0, 1, 1234
INPUT = [2, 3, 224, 224]


def randomise(model, seed):
    gen = torch.Generator().manual_seed(seed + 100)
    randomise_bn(model, gen)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
            if hasattr(m, 'layer_scale') and isinstance(m.layer_scale, nn.Parameter):
                m.layer_scale.uniform_(0.5, 1.5, generator=gen)
        # Parameters torchvision initialises to one value (zero biases, ViT's zero class token and
        # zero head): torch 1.13's exporter deduplicates identical initializers into Identity nodes,
        # and a zero head makes ViT's output 0. Trained models have neither.
        for _, p in sorted(model.named_parameters()):
            if p.numel() > 1 and bool((p == p.reshape(-1)[0]).all()):
                p.normal_(0, 0.05, generator=gen)


def build(name, seed):
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None) if hasattr(torchvision.models, 'get_model') \
        else getattr(torchvision.models, name)(weights=None)
    randomise(model, seed)
    return model.eval()


def has_bn(model):
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def train_mode_output(model, x):
    m = copy.deepcopy(model).train()
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.eval()
    with torch.no_grad():
        return m(x)


def run_model(name, out, verify, with_b):
    rec = {'files': {}, 'seconds': {}, 'onnx': {}}
    t0 = time.time()
    a = build(name, SEED_A)
    rec['parameters'] = sum(p.numel() for p in a.parameters())
    rec['has_batchnorm'] = has_bn(a)
    x = torch.randn(INPUT, generator=torch.Generator().manual_seed(SEED_X))
    with torch.no_grad():
        y = a(x)
    io = {'x': x.numpy().astype('<f4'), 'y': y.numpy().astype('<f4')}
    if rec['has_batchnorm']:
        io['y_train'] = train_mode_output(a, x).numpy().astype('<f4')
    write_safetensors(os.path.join(out, f'{name}.safetensors'), a.state_dict())
    if with_b:
        b = build(name, SEED_B)
        with torch.no_grad():
            io['y_b'] = b(x).numpy().astype('<f4')
        write_safetensors(os.path.join(out, f'{name}_b.safetensors'), b.state_dict())
        del b
    np.savez(os.path.join(out, f'{name}.io.npz'), **io)
    rec['max_abs_y'] = float(y.abs().max())
    rec['seconds']['build+outputs'] = round(time.time() - t0, 1)

    exports = [(name, False)] + ([(f'{name}_bn', True)] if rec['has_batchnorm'] else [])
    for file, keep_bn in exports:
        path = os.path.join(out, f'{file}.onnx')
        r = rec['onnx'][file] = {'export': 'bn kept (TrainingMode.PRESERVE)' if keep_bn else 'default'}
        t0 = time.time()
        try:
            export_onnx(a, x, path, keep_bn=keep_bn)
        except Exception as e:  # recorded, the next export/model still runs
            r['error'] = f'export failed: {type(e).__name__}: {e}'.splitlines()[0][:500]
            traceback.print_exc()
            continue
        r['export_seconds'] = round(time.time() - t0, 1)
        r['ops'] = op_counts(path)
        inits = [t.name for t in onnx.load(path).graph.initializer]
        sd = a.state_dict()
        r['initializers'] = len(inits)
        r['initializers_with_pytorch_names'] = sum(n in sd for n in inits)
        r['renamed_initializers_example'] = [n for n in inits if n not in sd][:3]
        if verify:
            t0 = time.time()
            try:
                y_onnx, how = run_onnx(path, io['x'])
                r['max_abs_diff'] = float(np.abs(y_onnx - io['y']).max())
                r['relative_diff'] = r['max_abs_diff'] / rec['max_abs_y']
                r['evaluator'] = how
                print(f'{file}.onnx ({how}): max |onnx(x) - torch(x)| = {r["max_abs_diff"]:.2e} '
                      f'(max |torch(x)| = {rec["max_abs_y"]:.3g})', flush=True)
            except Exception as e:
                r['verify_error'] = f'{type(e).__name__}: {e}'.splitlines()[0][:500]
                print(f'{file}.onnx: verify failed: {r["verify_error"]}', flush=True)
            r['verify_seconds'] = round(time.time() - t0, 1)
    for f in sorted(os.listdir(out)):
        if f.startswith(name + '.') or f.startswith(name + '_'):
            rec['files'][f] = os.path.getsize(os.path.join(out, f))
    return rec


def main():
    p = argparse.ArgumentParser(description='Export torchvision classifiers to ONNX (see the docstring).')
    p.add_argument('out', nargs='?', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'rebasin-out', 'torchvision'))
    p.add_argument('--models', default=','.join(MODELS), help='comma-separated subset of ' + ','.join(MODELS))
    p.add_argument('--verify', action='store_true', help='run each .onnx and compare with PyTorch')
    p.add_argument('--no-b', action='store_true', help='skip model B (NAME_b.safetensors, y_b)')
    opts = p.parse_args()
    out, models = opts.out, opts.models.split(',')
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        p.error(f'unknown model(s) {", ".join(unknown)}; known: {", ".join(MODELS)}')
    os.makedirs(out, exist_ok=True)
    summary_path = os.path.join(out, 'summary.json')
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    summary['versions'] = {'torch': torch.__version__, 'torchvision': torchvision.__version__,
                           'onnx': onnx.__version__,
                           'default_opset': torch.onnx._constants.ONNX_DEFAULT_OPSET}
    for name in models:
        print(f'--- {name}', flush=True)
        t0 = time.time()
        try:
            summary[name] = run_model(name, out, opts.verify, not opts.no_b)
        except Exception as e:
            traceback.print_exc()
            summary[name] = {'error': f'{type(e).__name__}: {e}'.splitlines()[0][:500]}
        summary[name]['total_seconds'] = round(time.time() - t0, 1)
        with open(summary_path, 'w') as f:
            json.dump(summary, f, indent=1)
        print(f'{name}: {summary[name]["total_seconds"]} s, '
              f'{sum(summary[name].get("files", {}).values()) / 1e6:.1f} MB', flush=True)


if __name__ == '__main__':
    main()
