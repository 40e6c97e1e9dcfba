"""Top-1 of trained checkpoints under every INT8 recipe, on ONNX Runtime and OpenVINO, each
file evaluated by the config's own test loop (``Runner.test()``, in this process, as
``tools/test.py`` and ``tools/deployment/test.py`` run it), beside the CPU it ran on:

- PyTorch FP32 (the checkpoint), ONNX Runtime FP32, OpenVINO FP32;
- ONNX Runtime INT8 PTQ per calibration method (minmax, percentile, entropy), on the
  kernels this CPU gets (``auto``) and, forced, on the other x64 path (u8u8 / u8s8); and
  min-max with the 7-bit weights a CPU without VNNI gets;
- ONNX Runtime INT8 PTQ min-max with learned rounding (AdaRound, ``--adaround-iterations``
  per conv), 8-bit and 7-bit weights;
- ONNX Runtime INT8 + mixed precision (as few sensitive convs FP32 as keep
  ``--max-drop`` on the calibration check images);
- ONNX Runtime INT8 after quantization-aware fine-tuning (``--qat-epochs``);
- OpenVINO INT8 (NNCF) per calibration method it offers, and + mixed precision chosen
  as for ONNX Runtime.

    python benchmarks/int8_accuracy.py \
        --model RepVGG-A0 configs/digits/repvgg-A0_digits.py A0/epoch_6.pth \
        --model QARepVGG-A0 configs/digits/qarepvgg-A0_digits.py QA/epoch_6.pth \
        --work-dir work_dirs/int8_accuracy --json int8.json --plot int8.png

Every figure is also compared with PyTorch FP32 image by image: top-1 agreement on the
test set, the images only one of the two gets right (lost / gained), and from them a 95 %
interval of the top-1 change (a paired comparison: how far the change could move on
another sample of test images). Speeds are images/s of each file at the data's size,
batch 16, one thread.
"""
import argparse
import datetime
import json
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
import os
import sys
import time

import numpy as np

from lab.emulated_cpu import seen_cpu
from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.checkpoint import CheckpointError, atomic_output, check_output, load_checkpoint
from mmrepvgg.checkpoint.fitting import checkpoint_file
from mmrepvgg.engine import ConfigError, load_repvgg_config
from mmrepvgg.engine.runner import build_runner, prepare_test_config
from mmrepvgg._utils import MissingExtraError

try:
    from lab.adaround import _RoundingSchedule as RoundingSchedule, adaround
    from lab.qat import finetune_qat, prepare_qat, strip_qat
    from mmrepvgg.deploy._host_cpu import INT8_WEIGHT_MAX, int8_kernel_choice, int8_weight_choice
    from mmrepvgg.deploy._mixed_precision import agreement as top1_agreement
    from mmrepvgg.deploy._mixed_precision import choose_fp32_convs, layer_sensitivity
    from mmrepvgg.deploy._onnx_eval import exported_model_test_config, preprocessed_batches
    from mmrepvgg.deploy.onnx_export import export_onnx, torch_logits
    from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel
    from mmrepvgg.deploy._qdq import CALIBRATION_METHODS, quantize_int8
    from mmrepvgg.deploy.quantization import Int8Recipe, export_int8
    from mmrepvgg.models import reparameterize_model
except MissingExtraError as missing:
    sys.exit(f'error: {missing}')

SPEED_BATCH = 16


def runner_top1(config: str, model_file: str, work_dir: str, int8_kernels: str = 'auto',
                checkpoint: bool = False) -> float:
    """Top-1 (%) of ``model_file`` by the config's test loop: a checkpoint in PyTorch, or
    an exported .onnx / .xml file."""
    cfg = load_repvgg_config(config)
    if checkpoint:
        prepare_test_config(cfg, config, model_file, work_dir)
    else:
        exported_model_test_config(cfg, model_file, 1, int8_kernels)
        prepare_test_config(cfg, config, model_file, work_dir)
        cfg.load_from = None
    # Loaded in this process: a persistent loader worker would hold each of the 15 rows
    # about 5 s at its end (measured), waiting for the previous row's worker to stop.
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    return float(build_runner(cfg).test()['accuracy/top1'])


def images_per_s(logits, images: np.ndarray, repeats: int = 5) -> float:
    """Best of ``repeats`` timed calls on one batch, after one warm-up call."""
    logits(images)
    best = min(_timed(logits, images) for _ in range(repeats))
    return len(images) / best


def _timed(logits, images) -> float:
    start = time.perf_counter()
    logits(images)
    return time.perf_counter() - start


def load_checkpoint_model(config: str, checkpoint: str) -> tuple:
    """The config, its train-form model holding the checkpoint's weights, and the
    checkpoint's local file.

    Raises:
        ConfigError, CheckpointError: the config or the checkpoint cannot be used.
    """
    checkpoint_path = checkpoint_file(checkpoint)
    cfg = load_repvgg_config(config)
    model = build_train_model(cfg)
    load_checkpoint(model, checkpoint_path, 'convert')
    return cfg, model, checkpoint_path


class Measurement:
    """The rows of one checkpoint: each recipe's top-1, agreement and speed."""

    def __init__(self, name: str, config: str, checkpoint: str, args):
        self.name, self.config, self.args = name, config, args
        cfg, self.model, self.checkpoint = load_checkpoint_model(config, checkpoint)
        self.deploy_model = reparameterize_model(self.model)
        self.calibration = [batch.images for batch in preprocessed_batches(
            cfg, 'train_dataloader', args.calib_images, shuffle=True,
            pipeline_from='test_dataloader')]
        self.held_out = [tuple(batch) for batch in preprocessed_batches(
            cfg, 'test_dataloader', 10 ** 9, shuffle=False)]
        self.train_batches = [tuple(batch) for batch in preprocessed_batches(
            cfg, 'train_dataloader', 10 ** 9, shuffle=True)]
        self.reference = torch_logits(self.deploy_model)
        self.speed_images = np.concatenate(self.calibration)[:SPEED_BATCH]
        self.rows = []

    @staticmethod
    def kernels_here(weight_bits: int = 8) -> str:
        """The ONNX Runtime INT8 kernels accurate on the CPU this process sees (the
        AVX2-only emulation included, which the package's own choice, reading
        /proc/cpuinfo, does not see) for weights of ``weight_bits``."""
        return int8_kernel_choice(seen_cpu().cpu,
                                  weight_max=INT8_WEIGHT_MAX[weight_bits]).kernels

    def path(self, recipe: str, suffix: str = '.onnx') -> str:
        file_stem = f'{self.name}_{recipe}'.replace(os.sep, '_')
        return os.path.join(self.args.work_dir, file_stem + suffix)

    def add(self, runtime: str, recipe: str, model_file: str, logits, top1: float,
            **extra) -> None:
        agreement = top1_agreement(self.reference, logits, self.held_out)
        row = dict(model=self.name, runtime=runtime, recipe=recipe, top1=top1,
                   agreement_with_pytorch=agreement.rate, test_images=agreement.num_images,
                   only_pytorch_correct=agreement.reference_only_correct,
                   only_this_correct=agreement.candidate_only_correct,
                   top1_change_95=list(agreement.top1_change_interval()),
                   images_per_s=images_per_s(logits, self.speed_images),
                   file=os.path.basename(model_file) if model_file else None, **extra)
        self.rows.append(row)
        print(f"{self.name} {runtime} {recipe}: top-1 {top1:.2f} %, agreement with "
              f"PyTorch {100 * agreement.rate:.2f} %, {row['images_per_s']:.0f} images/s",
              flush=True)

    def run(self) -> list:
        args, work_dir = self.args, self.args.work_dir
        self.add('pytorch', 'fp32', None, self.reference,
                 runner_top1(self.config, self.checkpoint, work_dir, checkpoint=True))
        size = self.calibration[0].shape[1:]
        fp32_path = self.path('fp32')
        export_onnx(self.model, fp32_path, (1, *size), overwrite=True)
        self.add('onnxruntime', 'fp32', fp32_path, OnnxRuntimeModel(fp32_path, 1),
                 runner_top1(self.config, fp32_path, work_dir))
        cpu_kernels = self.kernels_here()
        other_kernels = 'u8u8' if cpu_kernels == 'u8s8' else 'u8s8'
        for method in CALIBRATION_METHODS:
            int8_path = self.path(f'int8_{method}')
            quantize_int8(fp32_path, int8_path, self.calibration, overwrite=True,
                          method=method)
            for kernels in (cpu_kernels, other_kernels):
                self.add('onnxruntime', f'ptq {method}', int8_path,
                         OnnxRuntimeModel(int8_path, 1, kernels),
                         runner_top1(self.config, int8_path, work_dir, kernels),
                         int8_kernels=kernels)
        # What a CPU without VNNI gets by default: 7-bit weights on the fast u8s8 kernels.
        seven_bit_path = self.path('int8_minmax_7bit')
        quantize_int8(fp32_path, seven_bit_path, self.calibration, overwrite=True,
                      weight_bits=7)
        self.add('onnxruntime', 'ptq minmax, 7-bit weights', seven_bit_path,
                 OnnxRuntimeModel(seven_bit_path, 1, 'u8s8'),
                 runner_top1(self.config, seven_bit_path, work_dir, 'u8s8'),
                 int8_kernels='u8s8')
        if args.adaround_iterations:
            self.run_adaround(cpu_kernels)
        check = self.calibration_check()
        sensitivity = layer_sensitivity(fp32_path, self.calibration,
                                        [images for images, _ in check])
        candidate_path = self.path('int8_mixed_candidate')

        def quantized(nodes):
            quantize_int8(fp32_path, candidate_path, self.calibration, overwrite=True,
                          fp32_nodes=nodes)
            return OnnxRuntimeModel(candidate_path, 1, cpu_kernels)
        fp32_nodes = choose_fp32_convs(fp32_path, self.calibration, check,
                                       Int8Recipe(max_drop_points=args.max_drop), quantized,
                                       sensitivity)
        mixed_path = self.path('int8_mixed')
        quantize_int8(fp32_path, mixed_path, self.calibration, overwrite=True,
                      fp32_nodes=fp32_nodes)
        self.add('onnxruntime', f'ptq minmax + mixed (max drop {args.max_drop})',
                 mixed_path, OnnxRuntimeModel(mixed_path, 1, cpu_kernels),
                 runner_top1(self.config, mixed_path, work_dir, cpu_kernels),
                 fp32_convs=len(fp32_nodes))
        self.sensitivity = sensitivity
        print(f'{self.name}: most INT8-sensitive convs (logit SQNR, dB): ' + ', '.join(
            f'{row.node} {row.sqnr_db:.1f}' for row in sensitivity[:3]))
        if args.qat_epochs:
            self.run_qat()
        if not args.no_openvino:
            self.run_openvino(fp32_path)
        return self.rows

    def run_adaround(self, cpu_kernels: str) -> None:
        """Min-max PTQ of the model with learned-rounding weights, 8 and 7 bits: the
        product's export (nearest rounding, no bound) writes the learned levels."""
        schedule = RoundingSchedule(iterations=self.args.adaround_iterations)
        for bits, kernels, recipe in ((8, cpu_kernels, 'ptq minmax + adaround'),
                                      (7, 'u8s8', 'ptq minmax, 7-bit weights + adaround')):
            int8_path = self.path(f'int8_minmax_adaround_{bits}bit')
            export_int8(adaround(self.deploy_model, self.calibration, bits, schedule),
                        int8_path, self.calibration, overwrite=True,
                        recipe=Int8Recipe(weight_bits=str(bits), accuracy_bound_points=None))
            self.add('onnxruntime', recipe, int8_path, OnnxRuntimeModel(int8_path, 1, kernels),
                     runner_top1(self.config, int8_path, self.args.work_dir, kernels),
                     int8_kernels=kernels)

    def calibration_check(self) -> list:
        """Labelled training images (not the test set) on which mixed precision picks its
        FP32 convs, so the test-set figure is not chosen on the test set: the first
        ``--check-images`` of the shuffled training set, or its first 4 batches."""
        if self.args.check_images is None:
            return self.train_batches[:4]
        check, num_images = [], 0
        for images, labels in self.train_batches:
            if num_images == self.args.check_images:
                break
            take = self.args.check_images - num_images
            check.append((images[:take], labels[:take]))
            num_images += len(check[-1][1])
        return check

    def run_qat(self) -> None:
        import copy
        model = prepare_qat(copy.deepcopy(self.deploy_model), self.calibration)
        losses = finetune_qat(model, self.train_batches, self.args.qat_epochs,
                              self.args.qat_lr)
        qat_path = self.path('int8_qat')
        # The weights and kernels of the CPU this process sees (emulation included).
        weight_bits = int8_weight_choice(seen_cpu().cpu).bits
        export_int8(strip_qat(model), qat_path, self.calibration,
                    recipe=Int8Recipe(weight_bits=weight_bits), overwrite=True)
        kernels = self.kernels_here(weight_bits)
        self.add('onnxruntime', f'qat (BN re-inserted) {self.args.qat_epochs} epochs lr '
                 f'{self.args.qat_lr:g} + ptq minmax',
                 qat_path, OnnxRuntimeModel(qat_path, 1, kernels),
                 runner_top1(self.config, qat_path, self.args.work_dir, kernels),
                 qat_losses=losses)

    def run_openvino(self, fp32_path: str) -> None:
        """OpenVINO rows, each IR converted from the FP32 ONNX file already written (no
        ONNX export follows an OpenVINO run in this process: see docs/int8.md)."""
        from mmrepvgg.deploy.openvino_runtime import _onnx_to_openvino as onnx_to_openvino
        from mmrepvgg.deploy.openvino_runtime import OPENVINO_CALIBRATION_METHODS, OpenVINOModel
        max_drop = self.args.max_drop
        recipes = [('fp32', 'fp32', None, False), *(
            (f'ptq {method}', f'ptq_{method}', method, False)
            for method in OPENVINO_CALIBRATION_METHODS),
            (f'ptq minmax + mixed (max drop {max_drop})', 'ptq_minmax_mixed', 'minmax', True)]
        for recipe, file_stem, method, mixed in recipes:
            # Mixed precision within max drop is NNCF's accuracy control, which ranks the
            # convs itself on the check images (the ONNX Runtime ranking is not used).
            report = onnx_to_openvino(
                fp32_path, self.path(f'openvino_{file_stem}', '.xml'),
                None if method is None else self.calibration,
                self.calibration_check() if mixed else None,
                Int8Recipe(calibration_method=method or 'minmax',
                           max_drop_points=max_drop if mixed else None),
                overwrite=True)
            extra = dict(fp32_convs=len(report.fp32_nodes)) if mixed else {}
            self.add('openvino', recipe, report.path, OpenVINOModel(report.path, 1),
                     runner_top1(self.config, report.path, self.args.work_dir), **extra)


def measure(name: str, config: str, checkpoint: str, args) -> tuple:
    """The rows and the sensitivity table of one checkpoint."""
    measurement = Measurement(name, config, checkpoint, args)
    rows = measurement.run()
    return rows, [row._asdict() for row in measurement.sensitivity]


def print_table(rows: list) -> None:
    """The rows as a Markdown table, top-1 minus the same model's PyTorch FP32."""
    pytorch = {row['model']: row['top1'] for row in rows if row['runtime'] == 'pytorch'}
    print('| model | runtime | recipe | kernels | top-1 % | vs FP32 | 95 % interval | '
          'agreement % | lost / gained | images/s |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        low, high = row['top1_change_95']
        print(f"| {row['model']} | {row['runtime']} | {row['recipe']} | "
              f"{row.get('int8_kernels', '-')} | {row['top1']:.2f} | "
              f"{row['top1'] - pytorch[row['model']]:+.2f} | {low:+.2f} .. {high:+.2f} | "
              f"{100 * row['agreement_with_pytorch']:.2f} | "
              f"{row['only_pytorch_correct']} / {row['only_this_correct']} | "
              f"{row['images_per_s']:.0f} |")


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_recipes(results: dict, path: str) -> None:
    """Horizontal bars: top-1 minus PyTorch FP32 per recipe with its 95 % interval, one
    panel per model."""
    plt = _pyplot()
    models = list(dict.fromkeys(row['model'] for row in results['rows']))
    figure, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 6), squeeze=False)
    for axis, model in zip(axes[0], models):
        rows = [row for row in results['rows'] if row['model'] == model]
        reference = rows[0]['top1']
        labels = [f"{row['runtime']} {row['recipe']}" + (
            f" ({row['int8_kernels']})" if 'int8_kernels' in row else '') for row in rows]
        drops = [row['top1'] - reference for row in rows]
        # The interval is around the paired change, which can differ from the runner's
        # top-1 difference by a near tie: clip so that the whiskers never point inward.
        errors = [[max(drop - row['top1_change_95'][0], 0) for drop, row in zip(drops, rows)],
                  [max(row['top1_change_95'][1] - drop, 0) for drop, row in zip(drops, rows)]]
        axis.barh(range(len(rows)), drops, xerr=errors, capsize=2, color=[
            'tab:blue' if row['runtime'] == 'openvino' else 'tab:orange' for row in rows])
        axis.set_yticks(range(len(rows)), labels, fontsize=7)
        axis.invert_yaxis()
        axis.axvline(-0.3, color='grey', linestyle=':')
        axis.set_xlabel('top-1 minus PyTorch FP32 (points; whiskers: 95 % interval)',
                        fontsize=8)
        axis.set_title(f'{model} (PyTorch FP32 {reference:.2f} %)', fontsize=9)
    cpu = results['machine']['cpu']
    figure.suptitle(f"{cpu['model_name']} ({', '.join(cpu['isa'])}), 1 thread, "
                    f"{results['machine']['date'][:10]}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_sensitivity(results: dict, path: str) -> None:
    """Bars of each conv's logit SQNR when quantized alone, worst first, per model."""
    plt = _pyplot()
    models = list(results['sensitivity'])
    figure, axes = plt.subplots(len(models), 1, figsize=(9, 3 * len(models)), squeeze=False)
    for axis, model in zip(axes[:, 0], models):
        rows = results['sensitivity'][model]
        axis.bar(range(len(rows)), [row['sqnr_db'] for row in rows])
        axis.set_xticks(range(len(rows)), [f"conv {row['position']}" for row in rows],
                        rotation=90, fontsize=7)
        axis.set_ylabel('logit SQNR (dB)')
        axis.set_title(f'{model}: one conv quantized at a time, worst first', fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def machine() -> dict:
    return dict(cpu=seen_cpu(1).as_dict(), load_average=list(os.getloadavg()),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec='seconds'))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Top-1 of checkpoints under every INT8 '
                                     'recipe, ONNX Runtime and OpenVINO')
    parser.add_argument('--model', nargs=3, action='append', required=True,
                        metavar=('NAME', 'CONFIG', 'CHECKPOINT'))
    parser.add_argument('--calib-images', type=int, default=256)
    parser.add_argument('--max-drop', type=float, default=0.3,
                        help='mixed precision bound, points (default: 0.3)')
    parser.add_argument('--check-images', type=int, metavar='N',
                        help='training images on which both mixed-precision rows choose '
                        'their FP32 convs (default: the first 4 training batches)')
    parser.add_argument('--qat-epochs', type=int, default=1,
                        help='QAT fine-tuning epochs, the last one on frozen BN '
                        'statistics (default: 1; 0 skips QAT)')
    parser.add_argument('--qat-lr', type=float, default=1e-5,
                        help='QAT SGD learning rate (default: 1e-5)')
    parser.add_argument('--adaround-iterations', type=int, default=500,
                        help='learned-rounding steps per conv (default: 500; 0 skips the '
                        'AdaRound rows)')
    parser.add_argument('--no-openvino', action='store_true', help='skip the OpenVINO rows')
    parser.add_argument('--work-dir', default='work_dirs/int8_accuracy')
    parser.add_argument('--json', help='write the figures to this new JSON file')
    parser.add_argument('--plot', help='write a bar chart to this new PNG file')
    parser.add_argument('--sensitivity-plot',
                        help='write the per-conv sensitivity to this new PNG file')
    args = parser.parse_args(argv)
    inputs = [path for model in args.model for path in model[1:]]
    for path in (args.json, args.plot, args.sensitivity_plot):
        try:
            if path:
                check_output(path, inputs=inputs)
        except FileExistsError:
            parser.error(f'{path} exists; choose a new file name')
        except CheckpointError as error:
            parser.error(str(error))
    if args.calib_images < 1 or min(args.qat_epochs, args.adaround_iterations) < 0:
        parser.error('--calib-images must be positive, --qat-epochs and '
                     '--adaround-iterations not negative')
    if args.check_images is not None and args.check_images < 1:
        parser.error('--check-images must be positive')
    try:
        # Every model's config and checkpoint before any work: a bad second one would
        # otherwise be found after the first one's rows (minutes), which would be lost.
        for _, config, checkpoint in args.model:
            load_checkpoint_model(config, checkpoint)
    except (ConfigError, CheckpointError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    os.makedirs(args.work_dir, exist_ok=True)
    started = machine()
    print(f"CPU: {seen_cpu(1).describe()}; load average {started['load_average']}",
          flush=True)
    try:
        # One process per checkpoint: a second model in the process that had run the
        # first one's OpenVINO rows crashed once (SIGSEGV) on this host.
        # (A pool's daemonic workers could not start the dataloader's workers.)
        measured = []
        for name, config, checkpoint in args.model:
            with ProcessPoolExecutor(1, multiprocessing.get_context('spawn')) as pool:
                measured.append(pool.submit(measure, name, config, checkpoint,
                                            args).result())
        rows = [row for model_rows, _ in measured for row in model_rows]
    except (ConfigError, CheckpointError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    results = dict(machine=started, finished=machine(), threads=1, rows=rows,
                   sensitivity={name: sensitivity for (name, _, _), (_, sensitivity)
                                in zip(args.model, measured)})
    print_table(rows)
    if args.json:
        try:
            with atomic_output(args.json, inputs=inputs) as partial_path, \
                    open(partial_path, 'w') as stream:
                json.dump(results, stream, indent=1)
        except (FileExistsError, CheckpointError) as error:  # appeared meanwhile, disk full
            print(f'error: {error} (the figures are printed above)', file=sys.stderr)
            return 1
        print(f'wrote {args.json}')
    for path, plot in ((args.plot, plot_recipes), (args.sensitivity_plot, plot_sensitivity)):
        if not path:
            continue
        try:
            with atomic_output(path, inputs=inputs, suffix='.png') as partial_path:
                plot(results, partial_path)
        except (FileExistsError, CheckpointError) as error:  # appeared meanwhile, disk full
            print(f'error: {error} (the figures are printed above)', file=sys.stderr)
            return 1
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
