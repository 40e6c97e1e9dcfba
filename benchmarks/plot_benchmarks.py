"""PNG plots from the JSON of benchmarks/benchmark.py --variants all.

    python benchmarks/plot_benchmarks.py benchmark.json --out-dir docs

writes OUT_DIR/benchmark_accuracy_vs_speed.png and OUT_DIR/benchmark_train_vs_deploy.png.
"""
import argparse
import json
import os
import sys

from lab.plotting import plot_accuracy_vs_speed, plot_train_vs_deploy
from mmrepvgg.checkpoint import CheckpointError, atomic_output

PLOTS = {'benchmark_accuracy_vs_speed.png': plot_accuracy_vs_speed,
         'benchmark_train_vs_deploy.png': plot_train_vs_deploy}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Plot benchmark results.')
    parser.add_argument('results', help='JSON written by benchmark.py --json')
    parser.add_argument('--out-dir', default='docs', help='folder for the PNGs (docs)')
    args = parser.parse_args(argv)
    try:
        with open(args.results) as stream:
            results = json.load(stream)
    except (OSError, ValueError) as error:
        print(f'error: {args.results}: cannot read benchmark JSON ({error}); pass the file '
              'benchmark.py --json wrote', file=sys.stderr)
        return 1
    if not isinstance(results, dict):
        print(f'error: {args.results}: holds a JSON {type(results).__name__}, not the object '
              'benchmark.py --json writes; pass that file', file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    for file_name, plot in PLOTS.items():
        path = os.path.join(args.out_dir, file_name)
        try:
            # Replaces an older plot of the same name, never half-written, never the JSON.
            with atomic_output(path, overwrite=True, inputs={'results JSON': args.results},
                               suffix='.png') as partial_path:
                plot(results, partial_path)
        except ValueError as error:
            print(f'error: {args.results}: {error}', file=sys.stderr)
            return 1
        except CheckpointError as error:  # the path is the JSON itself, a full disk
            print(f'error: {error}', file=sys.stderr)
            return 1
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
