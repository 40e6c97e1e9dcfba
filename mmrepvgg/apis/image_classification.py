"""mmpretrain's ``get_model`` and ``inference_model`` for RepVGG: checkpoints of any known
layout through the project's reader, inference in deploy form."""
import copy
import os
import warnings
from typing import Any, List, Optional, Sequence, Union

from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.apis import ImageClassificationInferencer, ModelHub
from PIL import Image
import torch
from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint, load_checkpoint_file
from .._config_file import ConfigError, read_config
from ..model_zoo import checkpoint_source, find_model
from ..models import build_model, reparameterize_blocks, reparameterize_model
from ..registry import DATASETS
from .convert import CLASSIFIER_SCOPES, count_train_form_blocks

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
# PIL's default decompression-bomb bound (about 0.25 GiB decoded as 8-bit RGB); the
# inferencer decodes with OpenCV, which has none of its own.
MAX_IMAGE_PIXELS = 89_478_485


def _config_dataset_meta(config: Config) -> dict:
    """The class names of the config's test set (``metainfo``, else its dataset class's
    ``METAINFO``), as mmpretrain's ``get_model`` gives."""
    dataset = config.get('test_dataloader', {}).get('dataset', {})
    if dataset.get('metainfo'):
        return dict(dataset['metainfo'])
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        dataset_class = DATASETS.get(dataset['type']) if 'type' in dataset else None
    return dict(getattr(dataset_class, 'METAINFO', {}))


def _dataset_meta(checkpoint: Any, config: Config, source: str) -> dict:
    """Class names for the predictions: the checkpoint's, else the config's; a CheckpointError
    when the checkpoint's are no list of strings or do not match the head."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    dataset_meta = meta.get('dataset_meta') or (  # mmcls 0.x checkpoints: meta.CLASSES
        {'classes': meta['CLASSES']} if meta.get('CLASSES') else None)
    if not dataset_meta:
        return _config_dataset_meta(config)
    if isinstance(dataset_meta, dict) and 'classes' not in dataset_meta:
        return dict(dataset_meta)
    classes = dataset_meta.get('classes') if isinstance(dataset_meta, dict) else None
    if not (isinstance(classes, (list, tuple)) and all(isinstance(name, str)
                                                       for name in classes)):
        raise CheckpointError(f'{source}: meta.dataset_meta holds no list of class names; '
                              're-save the checkpoint, or drop its meta')
    num_classes = config.model.get('head', {}).get('num_classes')
    if isinstance(num_classes, int) and len(classes) != num_classes:
        raise CheckpointError(f'{source}: meta.dataset_meta names {len(classes)} classes but '
                              f'the model\'s head has {num_classes}; re-save the checkpoint '
                              'with its own class names, or drop its meta')
    return {**dataset_meta, 'classes': tuple(classes)}


def _checked_device(device: str) -> torch.device:
    """``device`` as torch names it; a ConfigError unless this machine has it."""
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f'device {device!r}: not a device name; pass cpu or cuda:N') \
            from None
    if torch_device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = torch_device.index or 0  # torch wraps an index past 127 below 0
        if not 0 <= index < count:
            raise ConfigError(f'device {device!r}: this machine has {count} CUDA GPU(s); '
                              'pass cpu' + (' or cuda:0' if count else ''))
    elif torch_device.type != 'cpu':
        raise ConfigError(f'device {device!r}: only cpu and cuda:N are supported; pass cpu')
    return torch_device


def get_model(model: Union[str, Config],
              pretrained: Union[bool, str] = False,
              device: Optional[str] = None,
              **kwargs) -> nn.Module:
    """A RepVGG classifier by zoo name (any letter case), config file or :class:`Config`, in
    eval mode, with mmpretrain's ``_config``, ``_dataset_meta`` and ``_metainfo``.

    ``pretrained``: ``False`` (random weights), ``True`` (a zoo name's published weights)
    or a checkpoint path, URL or zoo name (a train-form one given to a deploy config is
    loaded into the train form and fused). ``kwargs`` override the config's ``model`` dict
    (``head=dict(num_classes=10)``).

    Raises:
        ConfigError: an unknown name, config file or ``device``.
        ValueError: ``pretrained=True`` for a config (not a zoo name).
        CheckpointError: unreadable, misfit, or naming another number of classes.
    """
    if device is not None:
        device = _checked_device(device)
    config = copy.deepcopy(model) if isinstance(model, Config) else read_config(model)
    if config.get('default_scope') not in CLASSIFIER_SCOPES:
        raise ConfigError(f"{model if isinstance(model, str) else 'the config'}: an "
                          f"{config.default_scope} config (a segmentor or detector); this "
                          "classifies images: use it with tools/reparameterize_repvgg.py, "
                          f"tools/deployment/pytorch2onnx.py or {config.default_scope}'s own "
                          'inferencer')
    if pretrained is True:
        zoo_model = find_model(model) if isinstance(model, str) else None
        if zoo_model is None:
            raise ValueError(f'pretrained=True needs a model zoo name, not {model}; pass the '
                             'checkpoint path or URL as pretrained')
        pretrained = zoo_model.weights
    if kwargs:
        config.merge_from_dict(dict(model=kwargs))
    deploy = config.model.backbone.get('deploy', False)
    if pretrained:
        # Load into the train form: published checkpoints hold it; a deploy-form
        # checkpoint fuses the model before loading ('convert' mode).
        config.model.backbone.deploy = False
    config.model.setdefault('data_preprocessor', config.get('data_preprocessor'))
    classifier = build_model(config.model)
    if device is not None:
        classifier.to(device)
    classifier._config = config
    if pretrained:
        source = checkpoint_source(pretrained)
        checkpoint = load_checkpoint_file(source)  # read once: its meta names the classes
        load_checkpoint(classifier, checkpoint, 'convert', name=source)
        if deploy:
            reparameterize_blocks(classifier)
        classifier._dataset_meta = _dataset_meta(checkpoint, config, source)
    else:
        classifier._dataset_meta = _config_dataset_meta(config)
    # A deploy-form checkpoint fuses even a train config's model.
    classifier._config.model.backbone.deploy = count_train_form_blocks(classifier) == 0
    if isinstance(model, str) and find_model(model) is not None:
        # What mmpretrain's inference_model reads to pick the inferencer.
        classifier._metainfo = ModelHub.get(model)
    return classifier.eval()


def list_images(image_or_folder: str) -> List[str]:
    """``[image_or_folder]`` for a file; for a folder, its images searched recursively, sorted."""
    if not os.path.isdir(image_or_folder):
        return [image_or_folder]
    return sorted(os.path.join(folder, file_name)
                  for folder, _, file_names in os.walk(image_or_folder)
                  for file_name in file_names
                  if file_name.lower().endswith(IMAGE_EXTENSIONS))


def check_image(path: str) -> None:
    """Check from its header that ``path`` is an image of at most :data:`MAX_IMAGE_PIXELS`;
    a one-line ValueError naming the file otherwise."""
    try:
        if os.path.getsize(path) == 0:
            raise ValueError(f'{path}: is empty (0 bytes); pass an image file')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
    except Image.DecompressionBombError:
        width, height = -1, -1  # past twice PIL's bound: PIL did not say the size
    except OSError as error:  # PIL's UnidentifiedImageError is one
        reason = error.strerror or 'not an image PIL can read'
        raise ValueError(f'{path}: cannot be read as an image ({reason}); pass a .jpg or '
                         '.png image') from None
    if width < 0 or width * height > MAX_IMAGE_PIXELS:
        size = f'{width}x{height} pixels' if width >= 0 else \
            f'more than {2 * MAX_IMAGE_PIXELS} pixels'
        raise ValueError(f'{path}: declares {size}; at most {MAX_IMAGE_PIXELS} pixels are '
                         'decoded, resize it first')


def inference_model(model: Union[nn.Module, str, Config],
                    images: Union[str, Sequence[str]],
                    pretrained: Union[bool, str] = True,
                    device: Optional[str] = None,
                    batch_size: int = 1) -> Union[dict, List[dict]]:
    """Classify images (a path, a folder or a list of paths) with the deploy form of
    ``model``: a model (train-form blocks fused on a copy) or what :func:`get_model` takes.

    Returns a dict for one image path, else a list of dicts in input order, as mmpretrain's
    ``ImageClassificationInferencer`` (``pred_scores``: ``(num_classes,)``); a ValueError
    when an image fails :func:`check_image`, before any is decoded.
    """
    if not isinstance(model, nn.Module):
        model = get_model(model, pretrained=pretrained, device=device)
    elif count_train_form_blocks(model):
        model = reparameterize_model(model)
    paths = list_images(images) if isinstance(images, str) else list(images)
    for path in paths:
        check_image(path)
    # The pipeline's transforms are looked up in the current scope, which an earlier Runner
    # of this process may have left at another package's.
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        results = ImageClassificationInferencer(model)(paths, batch_size=batch_size)
    return results[0] if isinstance(images, str) and not os.path.isdir(images) else results
