"""What a checkpoint may hold: data that cannot be used is refused in one line before any
of it is materialised; inert extras (argparse, yacs, NumPy 1.x scalars) read fine."""
import argparse
import zipfile

import numpy as np
import pytest
import safetensors.torch
import torch
from mmengine.logging import HistoryBuffer

from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file
from mmrepvgg.checkpoint._reader import _view_exceeds_storage as view_exceeds_storage

from conftest import needs_newer_torch, torch_saves


def saved(tmp_path, content, name='model.pth', **save_options):
    path = tmp_path / name
    torch.save(content, path, **save_options)
    return str(path)


def assert_one_line_refusal(path, expected):
    with pytest.raises(CheckpointError, match=expected) as error:
        load_checkpoint_file(path)
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('shape', [(20000, 20000), (10**6, 10**6)])
def test_stride_0_view_claiming_a_huge_tensor_is_refused(tmp_path, shape):
    bomb = torch.zeros(1).expand(*shape)  # one float of storage
    path = saved(tmp_path, {'state_dict': {'weight': torch.ones(2), 'unused': bomb}})
    assert_one_line_refusal(path, r"a tensor claims shape "
                            rf'\({shape[0]}, {shape[1]}\) with strides \(0, 0\) over 1 '
                            'stored element, a damaged or malicious view')


def test_overlapping_view_with_more_elements_than_its_storage_is_refused(tmp_path):
    overlapping = torch.arange(2000.).as_strided((1000, 1000), (1, 1))
    path = saved(tmp_path, {'overlapping': overlapping})
    assert_one_line_refusal(path, r'claims shape \(1000, 1000\) with strides \(1, 1\)')


@pytest.mark.parametrize('shape, stride, offset, storage, exceeds', [
    ((3, 4), (4, 1), 0, 12, False),   # contiguous
    ((4, 3), (1, 4), 0, 12, False),   # transposed
    ((2, 2), (4, 1), 5, 12, False),   # a slice inside the storage
    ((2, 2), (4, 1), 8, 12, True),    # reaches past the end
    ((5, 1), (0, 1), 0, 12, True),    # stride 0, size 5
    ((1, 7), (0, 1), 0, 12, False),   # stride 0 on a size-1 dimension is harmless
    ((0, 10**9), (1, 1), 0, 0, False),  # empty
])
def test_view_exceeds_storage_only_when_it_names_missing_or_shared_elements(
        shape, stride, offset, storage, exceeds):
    assert view_exceeds_storage(shape, stride, offset, storage) is exceeds


def attributed_tensor():
    """An instance attribute that would hide the tensor from the NaN check."""
    tensor = torch.full((3, ), float('nan'))
    tensor.is_floating_point = bool  # bool() is False
    return tensor


def saveable(kind, make_tensor, expected):
    """A case of the test below, skipped where this torch cannot build or save its tensor."""
    return pytest.param(kind, make_tensor, expected, marks=needs_newer_torch(
        torch_saves(make_tensor), f'torch.save of a {kind} tensor'))


@pytest.mark.parametrize('kind, tensor, expected', [saveable(*case) for case in [
    ('meta', lambda: torch.empty(3, 3, device='meta'), 'makes a meta tensor'),
    ('quantized', lambda: torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8),
     'makes a quantized tensor'),
    ('sparse', lambda: torch.eye(3).to_sparse(), 'makes a sparse tensor'),
    ('nested', lambda: torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
     'makes a nested tensor'),
    ('jagged', lambda: torch.nested.nested_tensor(
        [torch.ones(2), torch.ones(3)], layout=torch.jagged),
     'makes a tensor subclass'),
    ('complex', lambda: torch.ones(3, dtype=torch.complex64),
     'makes a complex tensor, whose imaginary part would be dropped'),
    ('float8', lambda: torch.ones(3).to(torch.float8_e4m3fn),
     r'makes a tensor of a dtype no RepVGG checkpoint holds \(float8'),
    ('attribute', lambda: attributed_tensor(), 'makes a tensor subclass or a tensor with '
     'attributes set on it'),
]])
def test_unusable_tensor_kinds_are_refused_in_one_line(tmp_path, kind, tensor, expected):
    path = saved(tmp_path, {'state_dict': {'head.fc.weight': tensor()}})
    assert_one_line_refusal(path, expected)


def test_bit_flip_inside_a_tensor_record_is_refused_by_its_crc(tmp_path):
    path = saved(tmp_path, {'weight': torch.full((256, ), 3.0)})
    content = bytearray(open(path, 'rb').read())
    record_start = content.index(torch.full((4, ), 3.0).numpy().tobytes())
    content[record_start + 100] ^= 0x01
    open(path, 'wb').write(content)
    assert torch.load(path, weights_only=True)['weight'][25] != 3.0  # torch reads it as is

    assert_one_line_refusal(path, r'record model/data/0 is damaged \(its CRC-32 does not '
                            r'match\); re-download')


def test_compressed_zip_records_are_refused(tmp_path):
    path = saved(tmp_path, {'weight': torch.zeros(1000)})
    recompressed = tmp_path / 'recompressed.pth'
    with zipfile.ZipFile(path) as source, \
            zipfile.ZipFile(recompressed, 'w', zipfile.ZIP_DEFLATED) as target:
        for record in source.infolist():
            target.writestr(record.filename, source.read(record))
    assert_one_line_refusal(str(recompressed), 'is compressed, which torch.save never does')


def test_argparse_namespace_in_meta_reads_as_its_attributes(tmp_path):
    path = saved(tmp_path, {'state_dict': {'weight': torch.ones(2)},
                            'meta': {'args': argparse.Namespace(lr=0.1, arch='A0')}})
    checkpoint = load_checkpoint_file(path)
    assert checkpoint['meta'] == {'args': {'lr': 0.1, 'arch': 'A0'}}
    torch.testing.assert_close(checkpoint['state_dict']['weight'], torch.ones(2))


def runner_message_hub():
    """What mmengine's Runner stores under ``message_hub``: HistoryBuffers, numpy scalars."""
    loss = HistoryBuffer()
    loss.update(np.float64(1.5))
    loss.update(1.25)
    return {'log_scalars': {'train/loss': loss}, 'runtime_info': {'iter': 3},
            'resumed_keys': {'iter': True}}


def as_numpy_1_pickle(path):
    """Rewrite a legacy-format checkpoint as NumPy 1.x wrote it (``numpy.core.*``; NumPy 2
    writes ``numpy._core.*``)."""
    content = open(path, 'rb').read().replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert b'numpy.core.multiarray' in content
    open(path, 'wb').write(content)


def test_mmengine_checkpoint_pickled_under_numpy_1_reads(tmp_path):
    path = saved(tmp_path, {'message_hub': runner_message_hub(), 'meta': {'iter': 3}},
                 _use_new_zipfile_serialization=False)
    as_numpy_1_pickle(path)

    buffer = load_checkpoint_file(path)['message_hub']['log_scalars']['train/loss']

    np.testing.assert_array_equal(buffer.data[0], [1.5, 1.25])
    assert buffer.mean() == pytest.approx(1.375)


def test_pickled_statistics_methods_do_not_reach_the_history_buffer_class(
        tmp_path, monkeypatch):
    """HistoryBuffer.__setstate__ would register the file's ``statistics_methods`` for
    every buffer of the process."""
    hub = runner_message_hub()
    with monkeypatch.context() as patch:
        patch.setattr(HistoryBuffer, '__getstate__', lambda buffer: {
            **vars(buffer), 'statistics_methods': {'mean': HistoryBuffer.max}})
        path = saved(tmp_path, {'message_hub': hub})

    buffer = load_checkpoint_file(path)['message_hub']['log_scalars']['train/loss']

    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean
    assert type(buffer) is HistoryBuffer
    assert set(vars(buffer)) == {'max_length', '_log_history', '_count_history'}
    assert buffer.statistics('mean') == pytest.approx(1.375)


def test_getattr_in_mmengine_checkpoints_reaches_only_history_buffer_statistics(tmp_path):
    from test_checkpoint_safe_io import Call
    path = saved(tmp_path, {'message_hub': runner_message_hub(),
                            'hook': Call(getattr, HistoryBuffer, '__init__')})
    assert_one_line_refusal(path, 'refused, it calls builtins.getattr')


def test_safetensors_file_reads_without_pickle(tmp_path):
    weights = {'stem.conv.weight': torch.randn(8, 3, 3, 3), 'head.fc.bias': torch.randn(10)}
    path = tmp_path / 'repvgg_a0.safetensors'
    safetensors.torch.save_file(weights, path)

    loaded = load_checkpoint_file(str(path))

    assert type(loaded) is dict and loaded.keys() == weights.keys()
    for key, value in weights.items():
        torch.testing.assert_close(loaded[key], value)


def test_truncated_safetensors_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / 'cut.safetensors'
    safetensors.torch.save_file({'weight': torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    assert_one_line_refusal(str(path), 'cut.safetensors: not a readable safetensors file')


DIGIT_NAMES = tuple(f'digit {digit}' for digit in range(10))


@pytest.mark.parametrize('meta, classes', [
    ('not a dict', None),
    ({'dataset_meta': [1, 2]}, 'meta.dataset_meta holds no list of class names'),
    ({'dataset_meta': {'classes': 5}}, 'meta.dataset_meta holds no list of class names'),
    ({'dataset_meta': {'classes': ['cat', 'dog']}},  # fewer than the head's 10: an IndexError
     "meta.dataset_meta names 2 classes but the model's head has 10"),
    ({'dataset_meta': {'classes': list(DIGIT_NAMES)}}, DIGIT_NAMES),
])
def test_class_names_in_meta_are_a_list_of_strings_or_refused_in_one_line(
        tmp_path, meta, classes):
    from checkpoint_fixtures import trained_classifier, write_classifier_config

    from mmrepvgg.apis import get_model
    config = write_classifier_config(tmp_path)
    path = saved(tmp_path, {'state_dict': trained_classifier(config).state_dict(),
                            'meta': meta})
    if isinstance(classes, str):
        with pytest.raises(CheckpointError, match=classes) as error:
            get_model(str(config), pretrained=path)
        assert '\n' not in str(error.value)
        return
    model = get_model(str(config), pretrained=path)
    assert (model._dataset_meta or {}).get('classes') == classes
