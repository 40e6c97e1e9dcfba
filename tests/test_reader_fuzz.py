"""Mutated pickles inside valid zips: the reader answers each with inert data or one
line, never with another exception, and whatever it reads, plain
``torch.load(weights_only=True)`` (torch's own default-deny reader, the second opinion)
reads too, to the same values.

The zip around each mutated ``data.pkl`` is rewritten with ``zipfile`` (correct CRCs), so
the mutations reach the pickle machine instead of stopping at the archive's checks. The
mutations are seeded and fixed in number, so every run reads the same files.
"""
import collections
import io
import math
import random
import zipfile

import pytest
import torch

from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file

from conftest import needs_safe_globals

MUTATIONS_PER_SEED = 400


def seed_checkpoints():
    """Checkpoints as training writes them: tensors of several dtypes, a parameter, a view
    of a shared storage, an OrderedDict state dict and plain-data meta."""
    weight = torch.arange(12.).reshape(3, 4)
    state_dict = collections.OrderedDict(
        weight=weight, weight_t=weight.t(), row=weight[1], bias=torch.nn.Parameter(
            torch.ones(3)), mask=torch.tensor([True, False]), steps=torch.tensor(7),
        half=torch.arange(4, dtype=torch.float16))
    meta = {'epoch': 3, 'lr': 0.01, 'name': 'RepVGG-A0 \u00e9', 'big': 2**70, 'none': None,
            'flags': [True, False], 'shape': (3, 4), 'nested': {'a': [1, [2, (3, 'x')]]},
            'raw': b'\x00\xff'}
    return [{'state_dict': state_dict, 'meta': meta},
            {'model': {'w': torch.randn(2, 2, generator=torch.Generator().manual_seed(0))},
             'epoch': 1}]


def archive_with_pickle(archive_bytes, data_pkl):
    """``archive_bytes`` with its ``data.pkl`` replaced, every record stored with its CRC."""
    source = zipfile.ZipFile(io.BytesIO(archive_bytes))
    rewritten = io.BytesIO()
    with zipfile.ZipFile(rewritten, 'w') as archive:
        for info in source.infolist():
            raw = data_pkl if info.filename.endswith('/data.pkl') else source.read(info)
            archive.writestr(info.filename, raw)
    return rewritten.getvalue()


def mutated(rng, raw):
    """``raw`` with one or two edits: a byte replaced, bytes deleted, inserted or copied."""
    raw = bytearray(raw)
    for _ in range(rng.choice((1, 1, 2))):
        at, kind = rng.randrange(len(raw)), rng.random()
        if kind < 0.5:
            raw[at] = rng.randrange(256)
        elif kind < 0.7:
            del raw[at:at + rng.randint(1, 4)]
        elif kind < 0.85:
            raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        else:
            start = rng.randrange(len(raw))
            raw[at:at] = raw[start:start + rng.randint(1, 12)]
    return bytes(raw)


def torch_weights_only(content):
    try:
        return True, torch.load(io.BytesIO(content), weights_only=True)
    except Exception:  # torch's refusals have many types; only whether it read matters
        return False, None


def assert_same_values(ours, theirs, where='checkpoint'):
    if isinstance(theirs, dict):  # OrderedDict reads as dict
        assert type(ours) is dict and list(ours) == list(theirs), where
        for key in theirs:
            assert_same_values(ours[key], theirs[key], f'{where}[{key!r}]')
    elif isinstance(theirs, torch.Tensor):
        assert type(ours) is type(theirs) and ours.dtype == theirs.dtype, where
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for index, (mine, other) in enumerate(zip(ours, theirs)):
            assert_same_values(mine, other, f'{where}[{index}]')
    elif isinstance(theirs, float) and math.isnan(theirs):
        assert type(ours) is float and math.isnan(ours), where
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
# The second opinion is torch's weights_only unpickler as torch 2.4+ has it (before, it admits
# another set of globals, so 'refused by torch' is not the same oracle).
@needs_safe_globals
@pytest.mark.parametrize('seed', [0, 1])
def test_mutated_pickles_give_torchs_values_or_one_line(tmp_path, seed):
    buffer = io.BytesIO()
    torch.save(seed_checkpoints()[seed], buffer)
    original = buffer.getvalue()
    data_pkl = next(zipfile.ZipFile(io.BytesIO(original)).read(name) for name in
                    zipfile.ZipFile(io.BytesIO(original)).namelist()
                    if name.endswith('/data.pkl'))
    rng = random.Random(seed)
    path = tmp_path / 'mutated.pth'
    outcomes = collections.Counter()
    for index in range(MUTATIONS_PER_SEED):
        content = archive_with_pickle(original, mutated(rng, data_pkl))
        path.write_bytes(content)
        torch_read, theirs = torch_weights_only(content)
        try:
            ours = load_checkpoint_file(str(path))
        except CheckpointError as error:
            assert '\n' not in str(error), f'mutation {index}: {error}'
            outcomes['refused', torch_read] += 1
            continue
        assert torch_read, f'mutation {index}: read here, refused by torch weights_only'
        assert_same_values(ours, theirs, f'mutation {index}')
        outcomes['read', torch_read] += 1
    # The mutations reach both outcomes: the test would notice a reader refusing everything.
    print(dict(outcomes))
    assert outcomes['read', True] > 0 and outcomes['refused', False] > 0, outcomes
