"""INT8 speed on this CPU, one run, same weights, rows timed round-robin: ONNX Runtime FP32
and INT8 (this CPU's kernels, the other x64 kernels forced, and 7-bit weights on u8s8
kernels), OpenVINO FP32 and INT8 (NNCF), beside the eager PyTorch deploy model; with the
CPU, threads and load.

    python benchmarks/int8_speed.py --arch A0 --shape 224 224 --batch-size 16 \
        --threads 1
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/int8_speed.py   # oneDNN as on AVX2
"""
import argparse
import os
import sys
import tempfile

import torch

from lab.benchmark import (FP32_ONNX_FILE, INT8_ONNX_FILE, onnxruntime_runners,
                           openvino_runners_if_installed, random_train_classifier)
from lab.emulated_cpu import seen_cpu
from lab.rows import INT8_ONNXRUNTIME, ONNXRUNTIME
from mmrepvgg.analysis._timing import time_interleaved
from mmrepvgg.apis import repvgg_convert
from mmrepvgg.deploy._host_cpu import int8_kernel_choice
from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel
from mmrepvgg.deploy._qdq import quantize_int8
from mmrepvgg.models import ARCH_SETTINGS
from mmrepvgg.models.arch import EXTRA_ARCH_SETTINGS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='INT8 vs FP32 images/s on this CPU')
    parser.add_argument('--arch', default='A0', choices=[*ARCH_SETTINGS, *EXTRA_ARCH_SETTINGS])
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224])
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--rounds', type=int, default=5)
    args = parser.parse_args(argv)
    if min(*args.shape, args.batch_size, args.threads, args.rounds) < 1:
        parser.error('--shape, --batch-size, --threads and --rounds must be positive')
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        deploy_model = repvgg_convert(random_train_classifier(args.arch).eval())
        shape = (args.batch_size, 3, *args.shape)
        images = torch.randn(*shape)
        cpu = seen_cpu(args.threads)
        kernels = int8_kernel_choice(cpu.cpu).kernels
        other = 'u8u8' if kernels == 'u8s8' else 'u8s8'
        with tempfile.TemporaryDirectory() as workdir:
            runners, _ = onnxruntime_runners(deploy_model, workdir, shape, args.threads,
                                             weight_bits=8)
            runners[f'{INT8_ONNXRUNTIME} ({other} forced)'] = OnnxRuntimeModel(
                os.path.join(workdir, INT8_ONNX_FILE), args.threads, other)
            seven_bit_path = os.path.join(workdir, 'deploy_int8_7bit.onnx')
            quantize_int8(os.path.join(workdir, FP32_ONNX_FILE), seven_bit_path,
                          [images.numpy()], weight_bits=7)
            runners[f'{INT8_ONNXRUNTIME} (7-bit weights, u8s8)'] = OnnxRuntimeModel(
                seven_bit_path, args.threads, 'u8s8')
            info = {}
            runners.update(openvino_runners_if_installed(
                os.path.join(workdir, FP32_ONNX_FILE), shape, args.threads, info))
            if 'openvino_missing' in info:
                print(f"notice: no OpenVINO rows ({info['openvino_missing']})")
            candidates = {name: (lambda run: lambda: run(images))(run)
                          for name, run in runners.items()}

            def eager():
                with torch.inference_mode():
                    return deploy_model(images)
            candidates['ours deploy FP32, PyTorch eager'] = eager
            load_before = os.getloadavg()[0]
            timings = time_interleaved(candidates, args.batch_size, rounds=args.rounds)
    finally:
        torch.set_num_threads(previous_threads)
    fp32 = args.batch_size / timings[ONNXRUNTIME].median_s
    print(f'CPU: {cpu.describe()}; ONNX Runtime INT8 kernels on this CPU: {kernels}; '
          f'load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}')
    print(f'{args.arch} {args.shape[0]}x{args.shape[1]}, batch {args.batch_size}, '
          f'{args.rounds} rounds round-robin (median)')
    print('| path | images/s | x ONNX Runtime FP32 |')
    print('|---|---|---|')
    for name, timing in timings.items():
        speed = args.batch_size / timing.median_s
        print(f'| {name} | {speed:.1f} | {speed / fp32:.2f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
