"""Library calls leave the global random generators (Python's, numpy's, torch's) as they
found them: ``import mmrepvgg``, :func:`get_model`, :func:`convert_checkpoint`. A user's
seeded stream of data order and augmentation is not shifted by them; ``torch.manual_seed``
still decides a built model's initial weights."""
import random
import subprocess
import sys

import numpy as np
import torch
from conftest import REPO_ROOT

from mmrepvgg.apis import convert_checkpoint, get_model

CONFIG = f'{REPO_ROOT}/configs/digits/repvgg-A0_digits.py'

GENERATORS_AROUND_IMPORT = '''
import pickle, random, sys
import numpy as np, torch

def states():
    return pickle.dumps((random.getstate(), np.random.get_state(),
                         torch.get_rng_state().tolist()))

before = states()
import mmrepvgg
print('unchanged' if states() == before else 'changed')
'''


def global_generator_states():
    """Comparable snapshots of the three global generators."""
    return (random.getstate(), repr(np.random.get_state()), torch.get_rng_state().tolist())


def test_import_leaves_the_global_generators_alone():
    """A fresh process: the import pulls in mmengine and its dependencies, one of which
    (rich) draws from Python's generator."""
    result = subprocess.run([sys.executable, '-c', GENERATORS_AROUND_IMPORT],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == 'unchanged'


def test_get_model_leaves_the_global_generators_alone():
    before = global_generator_states()
    get_model(CONFIG)
    assert global_generator_states() == before


def test_convert_checkpoint_leaves_the_global_generators_alone(tmp_path):
    source = tmp_path / 'train.pth'
    torch.save({'state_dict': get_model(CONFIG).state_dict()}, source)
    before = global_generator_states()
    convert_checkpoint(CONFIG, str(source), str(tmp_path / 'deploy.pth'))
    assert global_generator_states() == before


def test_manual_seed_still_decides_a_built_models_initial_weights():
    def first_conv_weight(seed):
        torch.manual_seed(seed)
        return next(get_model(CONFIG).parameters()).detach().clone()

    seed_0 = first_conv_weight(0)
    assert torch.equal(first_conv_weight(0), seed_0)
    assert not torch.equal(first_conv_weight(1), seed_0)
