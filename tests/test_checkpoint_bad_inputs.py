"""Every bad input to tools/reparameterize_repvgg.py, tools/test.py and tools/train.py gives
one line, a non-zero exit and no traceback, and leaves the user's files alone.
docs/bad_inputs.md is this table, rendered by running the cases (in process, so that the
whole table takes about a minute):  .venv/bin/python tests/test_checkpoint_bad_inputs.py
"""
import argparse
import collections
import contextlib
import re
import io
import os
import shutil
import subprocess
import sys
import traceback
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_fixtures import (REPO_ROOT, file_fingerprint, save_train_checkpoint,
                                 trained_classifier, write_classifier_config)

from test_checkpoint_safe_io import eval_through_rebuild_from_type, save_attack

from mmrepvgg.datasets import prepare_digits
from mmrepvgg.models import reparameterize_blocks

from conftest import load_tool, needs_newer_torch, torch_saves, working_directory

TOOL = REPO_ROOT / 'tools' / 'reparameterize_repvgg.py'
DIGITS_CONFIG = REPO_ROOT / 'configs' / 'digits' / 'repvgg-A0_digits.py'
DIGITS_DEPLOY_CONFIG = REPO_ROOT / 'configs' / 'digits' / 'deploy' / 'repvgg-A0_deploy_digits.py'
DOC = REPO_ROOT / 'docs' / 'bad_inputs.md'


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def _tensors(model, **changes):
    state_dict = dict(model.state_dict())
    state_dict.update(changes)
    return {'state_dict': state_dict}


def _pickle_end(content, count):
    """Where the first ``count`` pickles of ``content`` end."""
    import pickletools
    position = 0
    for _ in range(count):
        position += next(offset for opcode, _, offset in pickletools.genops(content[position:])
                         if opcode.name == 'STOP') + 1
    return position


def _without_first_storage_key(content, keys_start):
    import pickle
    start = len(content) + keys_start
    end = _pickle_end(content[start:], 1) + start
    keys = pickle.loads(content[start:end])
    return content[:start] + pickle.dumps(keys[1:], protocol=2) + content[end:]


class CfgNode(dict):
    """Stands for yacs' config node, which the official training script stores in meta;
    pickled under yacs' name while :func:`yacs_importable` holds."""


CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'


@contextlib.contextmanager
def yacs_importable():
    """``yacs.config.CfgNode`` importable (for pickle) only while the file is saved, as on
    the official training machine."""
    config_module = types.ModuleType('yacs.config')
    config_module.CfgNode = CfgNode
    saved_modules = {name: sys.modules.get(name) for name in ('yacs', 'yacs.config')}
    sys.modules.update({'yacs': types.ModuleType('yacs'), 'yacs.config': config_module})
    try:
        yield
    finally:
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def build_case(name, folder: Path):
    """Files for case ``name`` in ``folder``; returns (argv, expected fragment)."""
    config = write_classifier_config(folder)
    model = trained_classifier(config)
    train = save_train_checkpoint(model, folder / 'train.pth')
    dst = folder / 'deploy.pth'

    def saved(checkpoint, file_name):
        torch.save(checkpoint, folder / file_name)
        return folder / file_name

    def written(content, file_name):
        (folder / file_name).write_bytes(content)
        return folder / file_name

    src, cfg, extra = train, config, []
    if name == 'SRC does not exist':
        src = folder / 'no_such.pth'
    elif name == 'SRC is a folder':
        src = folder
    elif name == 'SRC is empty':
        src = written(b'', 'empty.pth')
    elif name == 'SRC is truncated (half a download)':
        src = written(train.read_bytes()[:train.stat().st_size // 2], 'half.pth')
    elif name == 'SRC is not a checkpoint (a text file)':
        src = written(b'epoch: 120\nacc: 72.4\n', 'notes.pth')
    elif name == 'SRC pickle would run code (os.system)':
        src = saved({'state_dict': {}, 'meta': Evil(folder / 'PWNED')}, 'evil.pth')
    elif name == 'SRC pickle reaches eval through getattr and torch\'s own rebuild':
        src = Path(save_attack(folder / 'getattr_eval.pth', eval_through_rebuild_from_type,
                               folder / 'PWNED'))
    elif name == 'SRC claims a 20000x20000 tensor over 1 stored element':
        src = saved(_tensors(model, unused=torch.zeros(1).expand(20000, 20000)), 'bomb.pth')
    elif name == 'SRC has a bit flip inside a tensor record':
        content = bytearray(train.read_bytes())
        head_weight = model.state_dict()['head.fc.weight'].numpy().tobytes()
        content[content.index(head_weight) + 100] ^= 0x01
        src = written(bytes(content), 'bit_flip.pth')
    elif name == 'SRC holds a complex tensor':
        src = saved(_tensors(model, **{'head.fc.bias': torch.zeros(10, dtype=torch.complex64)}),
                    'complex.pth')
    elif name == 'SRC holds a sparse tensor':
        src = saved(_tensors(model, **{'head.fc.bias': torch.zeros(10).to_sparse()}),
                    'sparse.pth')
    elif name == 'SRC is a .safetensors file (how the hub serves timm weights)':
        from safetensors.torch import save_file
        save_file(dict(model.state_dict()), folder / 'train.safetensors')
        src = folder / 'train.safetensors'
    elif name == 'SRC pickled under NumPy 1.x (numpy.core names, mmcls-era files)':
        # The legacy (non-zip) format, as mmcls-era files are: one pickle to rename in.
        src = folder / 'numpy1.pth'
        torch.save({**_tensors(model), 'meta': {'best': np.float64(72.4),
                                                'history': np.arange(3.0)}}, src,
                   _use_new_zipfile_serialization=False)
        # NumPy 2 writes numpy._core names; NumPy 1 already wrote numpy.core ones.
        numpy_1_pickle = src.read_bytes().replace(b'numpy._core.multiarray',
                                                  b'numpy.core.multiarray')
        assert b'numpy.core.multiarray' in numpy_1_pickle
        src.write_bytes(numpy_1_pickle)
    elif name == 'SRC is an OrderedDict whose pickled state shadows get':
        shadowing = collections.OrderedDict(_tensors(model))
        shadowing.__dict__['get'] = 'not a method'
        src = saved(shadowing, 'shadow.pth')
    elif name == 'SRC holds float8 tensors':
        src = saved({key: tensor.to(torch.float8_e4m3fn) if tensor.is_floating_point()
                     else tensor for key, tensor in model.state_dict().items()}, 'float8.pth')
    elif name == 'SRC has a numpy object array in meta (a pointer the file chose)':
        src = saved({**_tensors(model), 'meta': {'hub': np.array([None], dtype=object)}},
                    'object_array.pth')
    elif name == 'SRC is a legacy file whose storage list leaves one out':
        src = folder / 'legacy.pth'
        torch.save(_tensors(model), src, _use_new_zipfile_serialization=False)
        content = src.read_bytes()
        keys_start = _pickle_end(content, 4) - len(content)  # 5th pickle: the storage list
        src.write_bytes(_without_first_storage_key(content, keys_start))
    elif name == 'SRC names stage_04 beside stage_4 (one model tensor, two keys)':
        state = dict(model.state_dict())
        folded = next(key for key in state if '.stage_4.' in key)
        src = saved({'state_dict': {**state, folded.replace('.stage_4.', '.stage_04.'):
                                    torch.zeros_like(state[folded])}}, 'folded.pth')
    elif name == 'SRC holds no state dict':
        src = saved([1, 2, 3], 'list.pth')
    elif name == 'SRC is not a RepVGG (ResNet keys)':
        src = saved({'state_dict': {'backbone.layer1.0.conv1.weight': torch.ones(1)}},
                    'resnet50.pth')
    elif name == 'SRC is another arch (B0 weights, A0 config)':
        src = save_train_checkpoint(
            trained_classifier(write_classifier_config(folder, arch='B0')), folder / 'b0.pth')
    elif name == 'SRC head size differs (100 classes, config 10)':
        src = save_train_checkpoint(
            trained_classifier(write_classifier_config(folder, num_classes=100)),
            folder / 'in100.pth')
    elif name == 'SRC has a negative BatchNorm running variance':
        src = saved(_tensors(model, **{'backbone.stage_1.0.branch_1x1.norm.running_var':
                                       -torch.ones(48)}), 'negative_var.pth')
    elif name == 'SRC has NaN weights':
        nan_var = torch.full((48, ), float('nan'))
        src = saved(_tensors(model, **{'backbone.stem.branch_3x3.norm.running_var': nan_var}),
                    'diverged.pth')
    elif name == 'SRC has BatchNorm statistics whose fused kernel overflows float32':
        # Finite, until the fusion divides the weight by sqrt(running_var + eps) ~ 0.003.
        src = saved(_tensors(model, **{'backbone.stem.branch_3x3.norm.weight':
                                       torch.full((48, ), 3e38),
                                       'backbone.stem.branch_3x3.norm.running_var':
                                       torch.zeros(48)}), 'overflowing.pth')
    elif name == 'SRC lacks the head (backbone only)':
        src = saved({'state_dict': {key: value for key, value in model.state_dict().items()
                                    if key.startswith('backbone.')}}, 'backbone_only.pth')
    elif name == 'SRC mixes train and deploy blocks':
        mixed = trained_classifier(config)
        reparameterize_blocks(mixed.backbone.stage_4)
        src = saved({'state_dict': mixed.state_dict()}, 'mixed.pth')
    elif name == '--src-format does not match SRC':
        extra = ['--src-format', 'official']
    elif name == 'CONFIG does not exist':
        cfg = folder / 'no_such_config.py'
    elif name == 'CONFIG is not a RepVGG config (ResNet)':
        cfg = folder / 'resnet.py'
        cfg.write_text("model = dict(type='ImageClassifier', backbone=dict(type='ResNet', "
                       "depth=18), neck=dict(type='GlobalAveragePooling'), head=dict("
                       "type='LinearClsHead', num_classes=10, in_channels=512))\n")
    elif name == 'CONFIG has a syntax error':
        cfg = folder / 'broken.py'
        cfg.write_text("model = dict(type='ImageClassifier'\n")
    elif name == 'DST exists (no --force)':
        dst.write_bytes(b'earlier deploy checkpoint')
    elif name == 'DST is SRC (with --force)':
        dst, extra = train, ['--force']
    elif name == 'DST is CONFIG (with --force)':
        dst, extra = config, ['--force']
    elif name == 'DST folder cannot be created (a file is in the way)':
        dst = written(b'', 'a_file') / 'deploy.pth'
    elif name == 'SRC keys under a model. wrapper (head.fc.bias is model.head.fc.bias)':
        src = saved({'state_dict': {f'model.{key}': value
                                    for key, value in model.state_dict().items()}},
                    'wrapped.pth')
    else:
        raise KeyError(name)
    return [str(cfg), str(src), str(dst)] + extra


def digits_checkpoint(folder: Path, file_name: str, arch: str = 'A0', num_classes: int = 10,
                      meta: dict = None, tensors: dict = None, **extra) -> Path:
    """A checkpoint of the digits model (random BN statistics) as mmengine saves it, with
    ``tensors`` replaced, added or (``None``) removed."""
    model = trained_classifier(write_classifier_config(folder, arch, num_classes))
    state_dict = {**model.state_dict(), **(tensors or {})}
    state_dict = {key: tensor for key, tensor in state_dict.items() if tensor is not None}
    if meta is None:
        meta = {'epoch': 6, 'iter': 270,
                'dataset_meta': {'classes': tuple(str(digit) for digit in range(10))}}
    torch.save({'state_dict': state_dict, 'meta': meta, **extra}, folder / file_name)
    return folder / file_name


def _loader_options(*loaders):
    # In-process runs: no worker processes to start and stop for every case.
    return [f'{loader}.{option}' for loader in loaders
            for option in ('num_workers=0', 'persistent_workers=False')]


def build_runner_case(tool: str, name: str, folder: Path, workspace: Path):
    """``(argv, cwd)`` for case ``name`` of tools/test.py or tools/train.py; ``workspace``
    holds data/digits."""
    work_dir = ['--work-dir', str(folder / 'work')]
    state = trained_classifier(write_classifier_config(folder)).state_dict()
    if tool == 'train':
        argv = [str(DIGITS_CONFIG), *work_dir, '--cfg-options',
                *_loader_options('train_dataloader', 'val_dataloader')]
        cwd = workspace
        if name == '--resume from a file without meta.iter':
            argv[3:3] = ['--resume', str(digits_checkpoint(folder, 'converted.pth',
                                                           meta={'epoch': 6}))]
        elif name == '--resume from a checkpoint whose message hub is empty':
            argv[3:3] = ['--resume', str(digits_checkpoint(folder, 'empty_hub.pth',
                                                           message_hub={}))]
        elif name == 'the digits data does not exist yet':
            cwd = folder
        elif name == '--work-dir is a file':
            (folder / 'work').write_text('notes')
        elif name == 'load_from with a backbone that does not fit (A1 weights, A0 config)':
            argv.append(f'load_from={digits_checkpoint(folder, "a1.pth", arch="A1")}')
        elif name.startswith('init_cfg mmrepvgg.Pretrained'):
            arch = 'A1' if 'A1' in name else 'A0'
            weights = digits_checkpoint(folder, f'{arch}_in1k.pth', arch=arch, num_classes=1000)
            argv[0] = str(folder / 'pretrained_digits.py')  # the fine-tuning template's way
            Path(argv[0]).write_text(
                f'_base_ = [{str(DIGITS_CONFIG)!r}]\nmodel = dict(backbone=dict(init_cfg=dict('
                f"_delete_=True, type='mmrepvgg.Pretrained', checkpoint={str(weights)!r})))\n")
            argv += ['train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=32',
                     'val_dataloader.dataset.indices=16']
        elif name == 'load_from a 1000-class ImageNet-style checkpoint (fine-tuning)':
            argv += [f'load_from={digits_checkpoint(folder, "in1k.pth", num_classes=1000)}',
                     'train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=32',
                     'val_dataloader.dataset.indices=16']
        else:
            raise KeyError(name)
        return argv, cwd
    config, extra = DIGITS_CONFIG, []
    changes = {}
    checkpoint_kwargs = {}
    if name == 'a tensor has another shape':
        key = 'backbone.stage_2.1.branch_1x1.norm.running_mean'
        changes[key] = state[key][:95]
    elif name == 'a stray extra tensor':
        changes['backbone.stage_1.0.extra'] = torch.ones(3)
    elif name == 'a 1000-class head':
        checkpoint_kwargs['num_classes'] = 1000
    elif name == 'A1 weights with the A0 config':
        checkpoint_kwargs['arch'] = 'A1'
    elif name == '--cfg-options model.backbone.arch=A1':
        extra = ['model.backbone.arch=A1']
    elif name == 'NaN in the head':
        changes['head.fc.weight'] = torch.full_like(state['head.fc.weight'], float('nan'))
    elif name == 'a negative BatchNorm running variance':
        changes['backbone.stem.branch_3x3.norm.running_var'] = -torch.ones(48)
    elif name == 'head weights that overflow float32 (finite, logits infinite)':
        changes['head.fc.weight'] = torch.full_like(state['head.fc.weight'], 3e38)
    elif name == 'a meta tensor (a shape without values)':
        changes['head.fc.bias'] = torch.empty(10, device='meta')
    elif name == 'a train-form checkpoint with the deploy config':
        config = DIGITS_DEPLOY_CONFIG
    elif name == 'the data root does not exist':
        extra = [f'test_dataloader.dataset.data_root={folder / "no_data"}']
    elif name == 'test_dataloader.batch_size=-1':
        extra = ['test_dataloader.batch_size=-1']
    elif name == 'test_dataloader.num_workers=-1':
        extra = ['test_dataloader.num_workers=-1']
    elif name in ('the data root is an http:// URL', 'the data root is an s3:// URL'):
        scheme = name.split()[-2]
        extra = [f'test_dataloader.dataset.data_root={scheme}example.com/digits']
    elif name == 'the data folder has no val/ folder':
        (folder / 'data' / 'train').mkdir(parents=True)
        extra = [f'test_dataloader.dataset.data_root={folder / "data"}']
    elif name == '--work-dir is a file':
        (folder / 'work').write_text('notes')
    elif name in ('--launcher pytorch without torchrun', '--launcher slurm outside Slurm'):
        work_dir.append('--launcher=' + name.split()[1])
    elif name == 'argparse.Namespace in meta':
        checkpoint_kwargs['meta'] = {'epoch': 6, 'args': argparse.Namespace(lr=0.1)}
    elif name == 'a yacs CfgNode in meta (official training script)':
        checkpoint_kwargs['meta'] = {'epoch': 6, 'config': CfgNode(lr=0.1)}
    elif name == 'no num_batches_tracked (saved by an old torch)':
        changes = {key: None for key in state if key.endswith('num_batches_tracked')}
    else:
        raise KeyError(name)
    with yacs_importable():
        checkpoint = digits_checkpoint(folder, 'digits.pth', tensors=changes,
                                       **checkpoint_kwargs)
    return [str(config), str(checkpoint), *work_dir, '--cfg-options',
            *_loader_options('test_dataloader'), 'test_dataloader.dataset.indices=16',
            *extra], workspace


REPARAMETERIZE = 'reparameterize_repvgg'
# (tool, case, what the printed line must say)
BAD_INPUTS = [(REPARAMETERIZE, name, expected) for name, expected in [
    ('SRC does not exist', 'no such checkpoint file; check the path'),
    ('SRC is a folder', 'is a folder, not a checkpoint file'),
    ('SRC is empty', 'is empty (0 bytes)'),
    ('SRC is truncated (half a download)', 'truncated or corrupt checkpoint'),
    ('SRC is not a checkpoint (a text file)', 'not a PyTorch checkpoint'),
    ('SRC pickle would run code (os.system)', 'refused, it calls posix.system'),
    ('SRC pickle reaches eval through getattr and torch\'s own rebuild',
     'refused, it calls torch._tensor._rebuild_from_type_v2'),
    ('SRC claims a 20000x20000 tensor over 1 stored element',
     'a damaged or malicious view'),
    ('SRC has a bit flip inside a tensor record', 'its CRC-32 does not match'),
    ('SRC holds a complex tensor', 'complex'),
    ('SRC holds a sparse tensor', 'sparse'),
    ('SRC holds no state dict', 'not a state dict'),
    ('SRC is not a RepVGG (ResNet keys)', 'holds no RepVGG block weights'),
    ('SRC is another arch (B0 weights, A0 config)',
     'holds RepVGG-B0 weights but the config builds RepVGG-A0'),
    ('SRC head size differs (100 classes, config 10)', 'model.head.num_classes=100'),
    ('SRC has NaN weights', 'holds NaN or infinite values'),
    ('SRC has a negative BatchNorm running variance', 'running variance with 48 negative'),
    ('SRC has BatchNorm statistics whose fused kernel overflows float32',
     'backbone.stem.branch_reparam.weight is not finite in torch.float32'),
    ('SRC lacks the head (backbone only)', 'lacks 2 tensors the model needs'),
    ('SRC mixes train and deploy blocks', 'mixes train-form'),
    ('SRC holds float8 tensors', 'makes a tensor of a dtype no RepVGG checkpoint holds'),
    ('SRC has a numpy object array in meta (a pointer the file chose)',
     "refused, it holds a numpy dtype 'O8'"),
    ('SRC is a legacy file whose storage list leaves one out',
     'does not name each storage the pickle uses exactly once'),
    ('--src-format does not match SRC', 'holds no RepVGG block weights in the official'),
    ('CONFIG does not exist', 'no such config file'),
    ('CONFIG is not a RepVGG config (ResNet)', 'not a RepVGG config'),
    ('CONFIG has a syntax error', 'cannot read the config'),
    ('DST exists (no --force)', 'exists; pass --force'),
    ('DST is SRC (with --force)', 'is the source checkpoint'),
    ('DST is CONFIG (with --force)', 'is the config'),
    ('DST folder cannot be created (a file is in the way)', 'cannot write'),
]] + [('test', name, expected) for name, expected in [
    ('a tensor has another shape',
     "'backbone.stage_2.1.branch_1x1.norm.running_mean' has shape (95,), the model's (96,)"),
    ('a stray extra tensor', "holds 1 tensor the model has no place for"),
    ('a 1000-class head', 'set model.head.num_classes=1000'),
    ('A1 weights with the A0 config', 'holds RepVGG-A1 weights but the config builds '
     'RepVGG-A0'),
    ('--cfg-options model.backbone.arch=A1', 'holds RepVGG-A0 weights but the config '
     'builds RepVGG-A1'),
    ('NaN in the head', "'head.fc.weight' holds NaN or infinite values"),
    ('a negative BatchNorm running variance', 'running variance with 48 negative values'),
    ('a meta tensor (a shape without values)', 'makes a meta tensor'),
    ('head weights that overflow float32 (finite, logits infinite)',
     'gives NaN or infinite outputs (outputs[0].pred_score) on test batch 0'),
    ('a train-form checkpoint with the deploy config',
     'convert it with tools/reparameterize_repvgg.py'),
    ('the data root does not exist', 'is not a folder'),
    ('test_dataloader.batch_size=-1', 'set a positive integer'),
    ('test_dataloader.num_workers=-1', 'num_workers is -1'),
    ('the data root is an http:// URL', "'http://example.com/digits' of <repo>/configs/"
     'digits/repvgg-A0_digits.py is a URL'),
    ('the data root is an s3:// URL', 'is a URL; the datasets read local folders'),
    ('the data folder has no val/ folder', "has no 'val' folder"),
    ('--work-dir is a file', '--work-dir <dir>/work: is a file, not a folder'),
    ('--launcher pytorch without torchrun', 'RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set'),
    ('--launcher slurm outside Slurm',
     'SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODELIST not set'),
]] + [('train', name, expected) for name, expected in [
    ('--resume from a file without meta.iter', 'cannot resume from it, it has no meta.iter'),
    ('--resume from a checkpoint whose message hub is empty',
     'its training state does not fit this run'),
    ('the digits data does not exist yet', 'create it with: python tools/demo.py'),
    ('--work-dir is a file', '--work-dir <dir>/work: is a file, not a folder'),
    ('load_from with a backbone that does not fit (A1 weights, A0 config)',
     'holds RepVGG-A1 weights but the config builds RepVGG-A0'),
    ('init_cfg mmrepvgg.Pretrained with A1 weights (A0 config)',
     'holds RepVGG-A1 weights but the config builds RepVGG-A0'),
]]


# (tool, case, what the line the user sees starts with): inputs refused, or crashing with a
# traceback, before; accepted now.
ACCEPTED_INPUTS = [
    (REPARAMETERIZE, 'SRC keys under a model. wrapper (head.fc.bias is model.head.fc.bias)',
     'saved mmrepvgg deploy checkpoint'),
    (REPARAMETERIZE, 'SRC is a .safetensors file (how the hub serves timm weights)',
     'saved mmrepvgg deploy checkpoint'),
    (REPARAMETERIZE, 'SRC pickled under NumPy 1.x (numpy.core names, mmcls-era files)',
     'saved mmrepvgg deploy checkpoint'),
    (REPARAMETERIZE, 'SRC is an OrderedDict whose pickled state shadows get',
     'saved mmrepvgg deploy checkpoint'),
    # stage_04 no longer folds onto stage_4 (int() would): the real weights are converted.
    (REPARAMETERIZE, 'SRC names stage_04 beside stage_4 (one model tensor, two keys)',
     'were not used, e.g. backbone.stage_04'),
    ('test', 'argparse.Namespace in meta', 'test metrics: '),
    ('test', 'a yacs CfgNode in meta (official training script)', 'test metrics: '),
    ('test', 'no num_batches_tracked (saved by an old torch)', 'test metrics: '),
    ('train', 'load_from a 1000-class ImageNet-style checkpoint (fine-tuning)',
     'notice: <dir>/in1k.pth: 2 tensors not loaded'),
    ('train', 'init_cfg mmrepvgg.Pretrained with 1000-class A0 weights',
     'into RepVGG; not loaded, kept as initialised: head.fc.bias'),
]
ALL_CASES = BAD_INPUTS + ACCEPTED_INPUTS
# Cases whose file this torch cannot write (torch.save of float8 tensors: torch 2.1 cannot).
FLOAT8_SAVES = torch_saves(lambda: torch.ones(1).to(torch.float8_e4m3fn))
UNBUILDABLE = set() if FLOAT8_SAVES else {'SRC holds float8 tensors'}
needs_float8_save = needs_newer_torch(FLOAT8_SAVES, 'torch.save of float8 tensors')


def case_params(cases):
    return [pytest.param(*case, marks=needs_float8_save) if case[1] in UNBUILDABLE else case
            for case in cases]


def shown_line(result, start: str) -> str:
    """The first printed line holding ``start``, from there on; metric values on 16
    images of a random model are shown as ``N``."""
    for line in (result.out + result.err).splitlines():
        if start in line:
            return re.sub(r'(": )[0-9.]+', r'\1N', line[line.index(start):])
    return '(not printed)'


class CaseResult:
    """What one case printed, with ``<dir>`` for its folder, ``<workspace>`` for the folder
    holding data/digits and ``<repo>`` for the checkout."""

    def __init__(self, exit_code, out, err, replacements):
        for path, name in replacements:
            out, err = out.replace(str(path), name), err.replace(str(path), name)
        self.exit_code, self.out, self.err = exit_code, out, err


def run_case(tool: str, name: str, folder: Path, workspace: Path) -> CaseResult:
    """Run ``tool`` in process on case ``name``; the files it reads must stay unchanged."""
    if tool == REPARAMETERIZE:
        argv, cwd = build_case(name, folder), folder
        read_files = argv[1:3]
    else:
        argv, cwd = build_runner_case(tool, name, folder, workspace)
        read_files = argv[1:2] if tool == 'test' else []
    fingerprints = {path: file_fingerprint(path) for path in map(Path, read_files)
                    if path.is_file()}
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            working_directory(cwd):
        try:
            exit_code = load_tool(f'tools/{tool}.py').main(argv)
        except Exception:  # recorded, so that only this case fails, as a traceback
            exit_code = None
            traceback.print_exc()
    for path, fingerprint in fingerprints.items():
        assert file_fingerprint(path) == fingerprint, f'{path} was modified'
    assert not (folder / 'PWNED').exists()
    return CaseResult(exit_code, out.getvalue(), err.getvalue(),
                      [(folder, '<dir>'), (workspace, '<workspace>'), (REPO_ROOT, '<repo>')])


def run_all_cases(new_folder, workspace: Path):
    """Every buildable case, each in a folder of its own, removed once it ran (their
    checkpoints add up to gigabytes; a case that fails an assertion keeps its folder)."""
    results = {}
    for tool, name, _ in ALL_CASES:
        if name not in UNBUILDABLE:
            folder = new_folder()
            results[tool, name] = run_case(tool, name, folder, workspace)
            shutil.rmtree(folder)
    return results


@pytest.fixture(scope='module')
def results(tmp_path_factory, digits_workspace):
    """Every case run once, shared by the per-case checks and the docs table."""
    return run_all_cases(lambda: tmp_path_factory.mktemp('case'), digits_workspace)


@pytest.mark.parametrize('tool, name, expected', case_params(BAD_INPUTS),
                         ids=[f'{tool}: {name}' for tool, name, _ in BAD_INPUTS])
def test_bad_input_gives_one_line_error_and_nonzero_exit(tool, name, expected, results):
    result = results[tool, name]
    assert result.exit_code == 1
    assert 'Traceback' not in result.err + result.out
    if tool == REPARAMETERIZE:
        assert result.out == ''
    error_lines = [line for line in result.err.splitlines() if line.startswith('error: ')]
    assert len(error_lines) == 1 and result.err.rstrip().endswith(error_lines[0]), result.err
    assert expected in error_lines[0]


@pytest.mark.parametrize('tool, name, start', ACCEPTED_INPUTS,
                         ids=[f'{tool}: {name}' for tool, name, _ in ACCEPTED_INPUTS])
def test_formerly_refused_input_is_accepted(tool, name, start, results):
    result = results[tool, name]
    assert result.exit_code == 0, (result.out + result.err)[-3000:]
    assert 'Traceback' not in result.err + result.out
    assert shown_line(result, start).startswith(start)


@pytest.mark.parametrize('tool', ['train', 'test', 'deployment/test', 'deployment/pytorch2onnx'])
def test_cfg_options_entry_without_a_value_is_one_argparse_line(tool, capsys):
    """mmengine's DictAction raised ValueError (a traceback) for KEY without =VALUE."""
    argv = [str(DIGITS_CONFIG)] + (['CHECKPOINT'] if tool != 'train' else []) + \
        (['OUT.onnx'] if tool.endswith('pytorch2onnx') else []) + \
        ['--cfg-options', 'train_cfg.max_epochs']
    with pytest.raises(SystemExit) as exit_info:
        load_tool(f'tools/{tool}.py').main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith('error: --cfg-options train_cfg.max_epochs: write KEY=VALUE')


def test_deploy_checkpoint_as_src_converts_as_a_no_op_with_a_notice(tmp_path, capsys):
    config = write_classifier_config(tmp_path)
    deployed = trained_classifier(config)
    reparameterize_blocks(deployed)
    src = save_train_checkpoint(deployed, tmp_path / 'already_deploy.pth')
    exit_code = load_tool('tools/reparameterize_repvgg.py').main(
        [str(config), str(src), str(tmp_path / 'deploy.pth')])
    out = capsys.readouterr().out
    assert exit_code == 0
    assert 'notice: ' in out and 'already in deploy form' in out
    reloaded = torch.load(tmp_path / 'deploy.pth', weights_only=True)['state_dict']
    for key, value in deployed.state_dict().items():
        torch.testing.assert_close(reloaded[key], value)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['SRC is truncated (half a download)',
                                  'CONFIG is not a RepVGG config (ResNet)'])
def test_tool_process_prints_no_traceback(name, tmp_path):
    argv = build_case(name, tmp_path)
    result = subprocess.run([sys.executable, str(TOOL)] + argv, capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: ')


def render_table(results):
    lines = ['# Bad inputs to the tools and what the user sees', '',
             'Generated by running each case: `.venv/bin/python '
             'tests/test_checkpoint_bad_inputs.py`',
             '(`tests/test_checkpoint_bad_inputs.py` checks this file is current). Every case',
             'exits with status 1 and prints one `error:` line on stderr, last, and no '
             'traceback;',
             'the files it reads (SRC, CHECKPOINT) and an existing DST are left unchanged. '
             '`<dir>`',
             'stands for the folder of the files, `<workspace>` for the folder holding '
             'data/digits,',
             '`<repo>` for the checkout. tools/test.py and tools/train.py refuse checkpoints '
             'before',
             'any image is evaluated or any step is trained.', '',
             '| Tool | Bad input | Exit | What the user sees |', '|---|---|---|---|']
    for tool, name, _ in BAD_INPUTS:
        result = results[tool, name]
        line = result.err.strip().splitlines()[-1].replace('|', '\\|')
        lines.append(f'| `{tool}.py` | {name} | {result.exit_code} | `{line}` |')
    lines += ['', '## Inputs that were refused or crashed, and are accepted', '',
              'Each runs to the end with status 0; the table shows the line that says so.',
              '', '| Tool | Input | Exit | What the user sees |', '|---|---|---|---|']
    for tool, name, start in ACCEPTED_INPUTS:
        result = results[tool, name]
        line = shown_line(result, start).replace('|', '\\|')
        lines.append(f'| `{tool}.py` | {name} | {result.exit_code} | `{line}` |')
    return '\n'.join(lines) + '\n'


@needs_float8_save
def test_docs_table_lists_every_bad_input_with_the_line_users_see(results):
    assert DOC.read_text() == render_table(results), (
        'docs/bad_inputs.md is stale; regenerate: .venv/bin/python '
        'tests/test_checkpoint_bad_inputs.py')


if __name__ == '__main__':
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        workspace = Path(root) / 'workspace'
        prepare_digits(str(workspace / 'data' / 'digits'))
        folders = (Path(root) / f'case{index}' for index in range(len(ALL_CASES)))

        def new_folder():
            folder = next(folders)
            folder.mkdir()
            return folder

        table = render_table(run_all_cases(new_folder, workspace))
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(table)
    print(f'wrote {DOC}')
