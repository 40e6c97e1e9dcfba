"""Fixtures shared by the package's tests (tests/) and the lab's (benchmarks/tests/): tiny
data roots in the ImageNet folder + annotation layout, the session's one trained digits
checkpoint; tool modules loaded for in-process tests. One conftest at the top, so that
both folders see the same session fixtures and ``from conftest import ...`` names one
module."""
import contextlib
import importlib.util
import io
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lab.threads import torch_threads

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


def load_tool(relative_path: str):
    """Import a script of tools/ or benchmarks/ (not a package) as a module, e.g.
    ``load_tool('tools/analysis_tools/get_flops.py').main([...])``."""
    name = os.path.splitext(os.path.basename(relative_path))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Read before any test module imports torchao, which sets it to torch's default folder.
_USER_INDUCTOR_CACHE_DIR = os.environ.get('TORCHINDUCTOR_CACHE_DIR')


@pytest.fixture(scope='session', autouse=True)
def inductor_cache_in_session_temp(tmp_path_factory):
    """torch.compile's C++ kernels (the PT2E INT8 tests, the tools they start) are cached in
    the session's temporary folder, which goes with it when the tests pass, rather than
    piling up in the system temporary folder run after run (torch keeps its one precompiled
    header there whatever the setting)."""
    with pytest.MonkeyPatch.context() as patch:
        if _USER_INDUCTOR_CACHE_DIR is None:
            patch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path_factory.mktemp('inductor')))
        yield


@pytest.fixture(scope='session')
def fake_imagenet_root(tmp_path_factory):
    """data_root with train/<class>/*.png, val/*.png and meta/{train,val}.txt: 2 classes,
    2 train and 2 val images of 40x48 random colours (small but larger than any crop the
    tests ask for)."""
    root = tmp_path_factory.mktemp('fake_imagenet')
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        lines = []
        for label in (0, 1):
            relative = f'n0{label}/img_{label}.png' if split == 'train' else f'img_{label}.png'
            path = root / split / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
            lines.append(f'{relative} {label}\n')
        (root / 'meta').mkdir(exist_ok=True)
        (root / 'meta' / f'{split}.txt').write_text(''.join(lines))
    return str(root)


@pytest.fixture(scope='session')
def digits_workspace(tmp_path_factory):
    """A folder holding data/digits (prepared once per session), to run tools in."""
    from mmrepvgg.datasets import prepare_digits
    workspace = tmp_path_factory.mktemp('digits_workspace')
    prepare_digits(str(workspace / 'data' / 'digits'))
    return workspace


def needs_newer_torch(available: bool, feature: str):
    """Skip mark for a test of ``feature`` where this torch lacks it (torch 2.1, the oldest
    supported, in CI's lower-bound environment); ``-ra`` prints the reason."""
    return pytest.mark.skipif(
        not available, reason=f'{feature}: not in torch {torch.__version__}, a newer torch has it')


def torch_saves(make_tensor) -> bool:
    """Whether this torch builds ``make_tensor()`` and ``torch.save``s it (float8 storages,
    nested and jagged tensors pickle only in torch releases after 2.1)."""
    try:
        torch.save(make_tensor(), io.BytesIO())
    except (AttributeError, KeyError, RuntimeError):
        return False
    return True


# nncf (the openvino extra's quantizer) imports torch.uint16 (torch >= 2.3).
needs_torch_for_nncf = needs_newer_torch(hasattr(torch, 'uint16'),
                                         'nncf (INT8 with OpenVINO) imports torch.uint16')
# torch.serialization's weights_only allow-list (add_safe_globals, get_safe_globals).
needs_safe_globals = needs_newer_torch(hasattr(torch.serialization, 'get_safe_globals'),
                                       'torch.serialization.get_safe_globals')


@contextlib.contextmanager
def working_directory(path):
    """``contextlib.chdir`` (Python 3.11) on Python 3.10 too: the block runs in ``path``, and
    the process goes back to the folder it was in."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture
def tool_env():
    """Environment for tool subprocesses: one thread each (2 shared cores; idle OpenMP
    threads spinning for a busy core slowed training ~10x) and this interpreter."""
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHON': sys.executable}


@pytest.fixture(scope='session')
def digits_train_checkpoint(digits_workspace):
    """The session's one trained model: a train-form RepVGG-A0 checkpoint of the digits
    config after 1 epoch on the 1,437 train images, its learning rate annealed within
    that epoch (its predictions vary with the image), trained by tools/train.py in this
    process with one thread and seed 0. Tests assert what holds for any such model, not
    its accuracy."""
    work_dir = digits_workspace / 'short_train'
    train = load_tool('tools/train.py')
    with working_directory(digits_workspace), torch_threads(1):
        return_code = train.main([
            os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py'), '--work-dir',
            str(work_dir), '--cfg-options', 'train_cfg.max_epochs=1',
            'param_scheduler.T_max=1', 'param_scheduler.end=1',
            'val_dataloader.dataset.indices=64', 'randomness.seed=0', 'log_level=WARNING'])
    assert return_code == 0
    return str(work_dir / 'epoch_1.pth')


def int8_conv_weights(path) -> list:
    """The int8 4-D weight tensors of an ONNX file (its conv kernels), read with onnx's own
    helpers."""
    import onnx
    from onnx import numpy_helper
    return [numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer
            if tensor.data_type == onnx.TensorProto.INT8 and len(tensor.dims) == 4]
