"""Classify images with a RepVGG classifier: class names and scores per image.

    python tools/image_demo.py IMG_OR_DIR CONFIG_OR_NAME CHECKPOINT [--topk 5]
        [--device cpu] [--out results.json]

CONFIG_OR_NAME is a config file or a model zoo name (``mmpretrain.list_models('repvgg*')``);
CHECKPOINT a path, a URL or a zoo name (its published weights). A train-form checkpoint is
fused into the deploy form first (same function, faster), with a notice.
"""
import argparse
import json
import os
import sys

import numpy as np
from mmpretrain.utils import progress

from mmrepvgg._utils import MAX_BATCH_IMAGES, MAX_DATASET_IMAGES, int_in
from mmrepvgg.apis import ConfigError, get_model, inference_model
from mmrepvgg.apis.image_classification import check_image, list_images
from mmrepvgg.checkpoint import CheckpointError, atomic_output, check_output
from mmrepvgg.models import reparameterize_blocks


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('images', help='an image file or a folder of images (recursive)')
    parser.add_argument('model', help='config file or model zoo name')
    parser.add_argument('checkpoint', help='checkpoint path, URL or model zoo name')
    parser.add_argument('--topk', type=int_in(1, MAX_DATASET_IMAGES), default=5,
                        help='classes to show per image (default: %(default)s)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0 (default: cpu)')
    parser.add_argument('--batch-size', type=int_in(1, MAX_BATCH_IMAGES), default=8,
                        help='images per forward pass (default: %(default)s)')
    parser.add_argument('--out', help='new .json file for the results (never overwritten)')
    return parser.parse_args(argv)


def top_classes(result: dict, classes, topk: int) -> list:
    """The ``topk`` best ``{'label', 'class', 'score'}`` of one inferencer result."""
    scores = np.asarray(result['pred_scores'])
    labels = np.argsort(-scores, kind='stable')[:topk]
    return [dict(label=int(label), score=float(scores[label]),
                 **({'class': classes[label]} if classes else {})) for label in labels]


def check_args(args: argparse.Namespace) -> list:
    """The images to classify; raises ValueError naming the argument at fault."""
    if args.out is not None:
        try:
            check_output(args.out, inputs=(args.model, args.checkpoint, args.images))
        except FileExistsError:
            raise ValueError(f'--out {args.out}: exists; choose a new file name') from None
        except CheckpointError as error:
            raise ValueError(f'--out {error}') from None
    if not os.path.exists(args.images):
        raise ValueError(f'{args.images}: no such image or folder; check the path')
    images = list_images(args.images)
    if not images:
        raise ValueError(f'{args.images}: holds no image file (by extension); pass a folder '
                         'of .jpg/.png images')
    for image in images:  # before the model is built: from the headers, nothing decoded
        check_image(image)
    return images


def main(argv=None) -> int:
    args = parse_args(argv)
    # The per-image lines below say what the inferencer's progress bar would, and the bar
    # leaves no line break in a log.
    progress.disable_progress_bar = True
    try:
        images = check_args(args)
        model = get_model(args.model, pretrained=args.checkpoint, device=args.device)
        num_fused = reparameterize_blocks(model)
        if num_fused:
            print(f'notice: {args.checkpoint} holds the train form; fused its {num_fused} '
                  'RepVGG blocks into the deploy form for inference (same function)')
        results = inference_model(model, images, batch_size=args.batch_size)
    except (ValueError, CheckpointError, ConfigError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    classes = model._dataset_meta.get('classes')
    records = []
    for image, result in zip(images, results):
        best = top_classes(result, classes, args.topk)
        records.append(dict(image=image, topk=best))
        shown = ', '.join(f'{entry.get("class", entry["label"])} {entry["score"]:.3f}'
                          for entry in best)
        print(f'{image}: {shown}')
    if args.out is not None:
        try:
            with atomic_output(args.out, inputs=(args.model, args.checkpoint, args.images)) \
                    as partial_path, open(partial_path, 'w') as stream:
                json.dump(records, stream, indent=1)
        except (FileExistsError, CheckpointError) as error:  # appeared meanwhile, disk full
            print(f'error: {error}', file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f'error: interrupted; {args.out} was not written', file=sys.stderr)
            return 130
        print(f'wrote {len(records)} results to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
