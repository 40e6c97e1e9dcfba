"""Top-1 of trained checkpoints in PyTorch, ONNX Runtime FP32 and ONNX Runtime INT8, each
measured by the project's own tools as a user runs them:

    tools/test.py CFG CKPT                                  (PyTorch)
    tools/deployment/pytorch2onnx.py CFG CKPT fp32.onnx --shape H W
    tools/deployment/pytorch2onnx.py CFG CKPT int8.onnx --quantize int8
    tools/deployment/test.py CFG fp32.onnx / int8.onnx     (ONNX Runtime)

    python tools/analysis_tools/int8_accuracy.py --shape 32 32 \
        --model RepVGG-A0 configs/digits/repvgg-A0_digits.py A0/epoch_6.pth \
        --model QARepVGG-A0 configs/digits/qarepvgg-A0_digits.py QA/epoch_6.pth \
        --work-dir work_dirs/int8_accuracy --json int8.json --plot int8.png
"""
import argparse
import os
import subprocess
import sys

from mmrepvgg.analysis.benchmark import write_json_atomic
from mmrepvgg.checkpoint import CheckpointError, atomic_output, check_output
from mmrepvgg.engine import parse_test_metrics

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(tool: str, *args: str) -> str:
    """Run ``tools/<tool>`` with this interpreter; its stdout, or exit with its error."""
    command = [sys.executable, os.path.join(TOOLS, tool), *args]
    print('$ python', ' '.join([os.path.join('tools', tool), *args]), flush=True)
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        sys.exit(f'error: tools/{tool} failed (exit code {finished.returncode}): '
                 f'{finished.stderr.strip().splitlines()[-1:]}')
    return finished.stdout


def measure(name: str, config: str, checkpoint: str, shape, work_dir: str,
            calib_images: int) -> dict:
    """PyTorch, ONNX Runtime FP32 and INT8 top-1 of one checkpoint, and the INT8 export's
    agreement line."""
    fp32_path = os.path.join(work_dir, f'{name}_fp32.onnx')
    int8_path = os.path.join(work_dir, f'{name}_int8.onnx')
    run_tool('deployment/pytorch2onnx.py', config, checkpoint, fp32_path, '--shape',
             *map(str, shape), '--force')
    exported = run_tool('deployment/pytorch2onnx.py', config, checkpoint, int8_path,
                        '--quantize', 'int8', '--calib-images', str(calib_images),
                        '--force')
    agreement = [line for line in exported.splitlines() if 'agreement' in line]
    top1 = {}
    for label, tool, model_file in (('pytorch', 'test.py', checkpoint),
                                    ('onnxruntime_fp32', 'deployment/test.py', fp32_path),
                                    ('onnxruntime_int8', 'deployment/test.py', int8_path)):
        output = run_tool(tool, config, model_file, '--work-dir', work_dir)
        top1[label] = parse_test_metrics(output)['accuracy/top1']
        print(f'{name} {label}: top-1 {top1[label]:.2f} %', flush=True)
    return dict(model=name, config=config, checkpoint=checkpoint, top1=top1,
                int8_minus_fp32=top1['onnxruntime_int8'] - top1['onnxruntime_fp32'],
                calib_images=calib_images, agreement=agreement[-1] if agreement else None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='FP32 vs INT8 top-1 of checkpoints')
    parser.add_argument('--model', nargs=3, action='append', required=True,
                        metavar=('NAME', 'CONFIG', 'CHECKPOINT'))
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'), help='FP32 export size (default: 224 224)')
    parser.add_argument('--calib-images', type=int, default=256)
    parser.add_argument('--work-dir', default='work_dirs/int8_accuracy')
    parser.add_argument('--json', help='write the figures to this new JSON file')
    parser.add_argument('--plot', help='write a bar chart to this new PNG file')
    args = parser.parse_args(argv)
    inputs = [path for model in args.model for path in model[1:]]
    for path in (args.json, args.plot):
        try:
            if path:
                check_output(path, inputs=inputs)
        except FileExistsError:
            parser.error(f'{path} exists; choose a new file name')
        except CheckpointError as error:
            parser.error(str(error))
    os.makedirs(args.work_dir, exist_ok=True)
    rows = [measure(name, config, checkpoint, args.shape, args.work_dir, args.calib_images)
            for name, config, checkpoint in args.model]
    for row in rows:
        print(f"{row['model']}: PyTorch {row['top1']['pytorch']:.2f} %, ONNX Runtime FP32 "
              f"{row['top1']['onnxruntime_fp32']:.2f} %, INT8 "
              f"{row['top1']['onnxruntime_int8']:.2f} % ({row['int8_minus_fp32']:+.2f} "
              'points)')
    if args.json:
        try:
            write_json_atomic(rows, args.json)
        except FileExistsError as error:  # another run wrote it meanwhile; kept
            print(f'error: {error} (the figures are printed above)', file=sys.stderr)
            return 1
        print(f'wrote {args.json}')
    if args.plot:
        from mmrepvgg.analysis.plotting import plot_int8_accuracy
        try:
            with atomic_output(args.plot, inputs=inputs, suffix='.png') as partial_path:
                plot_int8_accuracy(rows, partial_path)
        except (FileExistsError, CheckpointError) as error:  # appeared meanwhile, disk full
            print(f'error: {error} (the figures are printed above)', file=sys.stderr)
            return 1
        print(f'wrote {args.plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
