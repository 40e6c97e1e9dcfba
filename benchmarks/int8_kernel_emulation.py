"""How much INT8 top-1 the non-VNNI x86 kernels' int16 saturation costs a checkpoint,
measured on any CPU: FP32, INT8 in exact integer arithmetic (what VNNI, ONNX Runtime's
u8u8 path and OpenVINO compute) and INT8 with every pair of u8 x s8 products saturated
to int16 (ONNX Runtime's u8s8 kernels on AVX2 without VNNI), for 8-bit weights and for
the 7-bit weights such a CPU gets (which cannot saturate), on the config's test set.

    python benchmarks/int8_kernel_emulation.py configs/digits/repvgg-A0_digits.py \
        work_dirs/a0/epoch_6.pth --calib-images 256
"""
import argparse
import copy
import sys

import numpy as np
import torch

from lab.emulated_cpu import seen_cpu
from lab.kernel_emulation import IntegerConvEmulation
from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.checkpoint import CheckpointError, load_checkpoint
from mmrepvgg.deploy._host_cpu import INT8_WEIGHT_MAX
from mmrepvgg.deploy._onnx_eval import preprocessed_batches
from lab.adaround import _fake_quantize as fake_quantize
from mmrepvgg.engine import ConfigError, load_repvgg_config
from mmrepvgg.models import reparameterize_model


def top1(model, batches) -> float:
    with torch.no_grad():
        correct = sum(int((model(torch.from_numpy(images)).argmax(1).numpy() == labels).sum())
                      for images, labels in batches)
    return 100 * correct / sum(len(labels) for _, labels in batches)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='INT8 top-1 with and without the int16 '
                                     'pair saturation of non-VNNI x86 kernels')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--calib-images', type=int, default=256)
    args = parser.parse_args(argv)
    try:
        cfg = load_repvgg_config(args.config)
        model = build_train_model(cfg)
        load_checkpoint(model, args.checkpoint, 'convert')
        calibration = [batch.images for batch in preprocessed_batches(
            cfg, 'train_dataloader', args.calib_images, shuffle=True,
            pipeline_from='test_dataloader')]
        test_batches = [tuple(batch) for batch in preprocessed_batches(
            cfg, 'test_dataloader', 10 ** 9, shuffle=False, batch_size=16)]
    except (ConfigError, CheckpointError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    deploy_model = reparameterize_model(model)
    quantized = fake_quantize(copy.deepcopy(deploy_model), calibration)
    rows = {'FP32': top1(deploy_model, test_batches)}
    shares = {}
    for label, saturate, weight_max in (
            ('INT8 exact (VNNI / u8u8)', False, INT8_WEIGHT_MAX[8]),
            ('INT8 u8s8 int16-saturated pairs (AVX2, no VNNI)', True, INT8_WEIGHT_MAX[8]),
            ('INT8 7-bit weights, u8s8 int16-saturated pairs (AVX2 default)', True,
             INT8_WEIGHT_MAX[7])):
        with IntegerConvEmulation(quantized, saturate, weight_max) as emulation:
            rows[label] = top1(quantized, test_batches)
        if saturate:
            shares[label] = np.array(emulation.saturated_share)
    print(f'CPU (emulating, not running, the non-VNNI kernels): {seen_cpu().describe()}')
    print(f'{args.checkpoint} on {sum(len(b[1]) for b in test_batches)} test images, '
          f'calibrated on {sum(len(b) for b in calibration)} training images:')
    for label, value in rows.items():
        print(f'  {label}: top-1 {value:.2f} % ({value - rows["FP32"]:+.2f} points)')
    for label, share in shares.items():
        print(f'  saturated pairs, {label}: {100 * share.mean():.4f} % on average, '
              f'{100 * share.max():.4f} % in the worst conv call')
    return 0


if __name__ == '__main__':
    sys.exit(main())
