"""The project's own paths through mmengine (Runner resume, ``mmrepvgg.Pretrained``) read
through its reader and never run stored config text. That ``import mmrepvgg`` changes
nothing in the process: tests/test_public_api.py."""
import logging
import threading
import types

import numpy as np
import pytest
import torch
from checkpoint_fixtures import trained_classifier, write_classifier_config
from mmengine.logging import HistoryBuffer
from mmengine.registry import DefaultScope

from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file
from mmrepvgg.engine.safe_runner import RepVGGRunner
from test_checkpoint_safe_io import eval_through_rebuild_from_type, save_attack


def message_hub_checkpoint():
    loss = HistoryBuffer()
    loss.update(np.float64(1.5))
    return {'state_dict': {'weight': torch.ones(2)},
            'message_hub': {'log_scalars': {'train/loss': loss}}}


def test_a_plain_weights_only_load_in_another_thread_never_sees_an_allowance(tmp_path):
    """torch refuses HistoryBuffer unless allow-listed; our loads must not allow it, even
    for a moment."""
    path = tmp_path / 'epoch_1.pth'
    torch.save(message_hub_checkpoint(), path)
    outcomes, stop = [], threading.Event()

    def plain_loads():
        while not stop.is_set():
            try:
                torch.load(path, weights_only=True)
                outcomes.append('loaded')
            except Exception as error:  # what torch raises without an allowance
                outcomes.append(type(error).__name__)

    thread = threading.Thread(target=plain_loads)
    thread.start()
    try:
        for _ in range(20):
            assert load_checkpoint_file(str(path))['message_hub']['log_scalars']
    finally:
        stop.set()
        thread.join()
    assert outcomes and set(outcomes) == {'UnpicklingError'}


def test_resume_hands_mmengine_a_checkpoint_without_config_text(tmp_path):
    """mmengine's Runner.resume runs Config.fromstring(meta['config'])."""
    config = write_classifier_config(tmp_path)
    model = trained_classifier(config)
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'epoch_1.pth'
    code = f'open({str(marker)!r}, "w").close()'
    torch.save({'state_dict': model.state_dict(), 'message_hub': {},
                'meta': {'epoch': 1, 'iter': 10, 'config': code, 'cfg': code}}, path)
    runner = types.SimpleNamespace(_resuming=True, _fit_mode='exact', model=model,
                                   call_hook=lambda *args, **kwargs: None,
                                   logger=logging.getLogger('test'),
                                   # the training state's own checks: test_trust_resume_state
                                   _check_training_state=lambda checkpoint, filename: None)

    checkpoint = RepVGGRunner.load_checkpoint(runner, str(path))

    assert checkpoint['meta'] == {'epoch': 1, 'iter': 10}
    assert not marker.exists()


def test_pretrained_initializer_refuses_an_eval_payload(tmp_path):
    from mmrepvgg.models import build_model, repvgg_classifier_cfg
    marker = tmp_path / 'PWNED'
    evil = save_attack(tmp_path / 'evil.pth', eval_through_rebuild_from_type, marker)
    cfg = repvgg_classifier_cfg('A0', num_classes=10)
    cfg['backbone']['init_cfg'] = dict(type='mmrepvgg.Pretrained', checkpoint=evil)
    model = build_model(cfg)
    with DefaultScope.overwrite_default_scope('mmrepvgg'), \
            pytest.raises(CheckpointError, match='evil.pth: refused, it calls'):
        model.init_weights()
    assert not marker.exists()


@pytest.mark.parametrize('source_arch, refused', [('A0', False), ('A1', True)])
def test_pretrained_initializer_fits_the_backbone_exactly_and_skips_the_head(
        tmp_path, source_arch, refused):
    from mmrepvgg.models import build_model, repvgg_classifier_cfg
    source = build_model(repvgg_classifier_cfg(source_arch, num_classes=1000))
    path = tmp_path / f'{source_arch}.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    cfg = repvgg_classifier_cfg('A0', num_classes=10)
    cfg['backbone']['init_cfg'] = dict(type='mmrepvgg.Pretrained', checkpoint=str(path))
    model = build_model(cfg)
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        if refused:
            with pytest.raises(CheckpointError, match='holds RepVGG-A1 weights but the '
                               'config builds RepVGG-A0'):
                model.init_weights()
            return
        model.init_weights()
    for key, tensor in source.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], tensor, rtol=0, atol=0)


@pytest.mark.parametrize('prefix', ['backbone', 'backbone.'])
def test_pretrained_initializer_takes_mmpretrains_prefix_form(tmp_path, prefix):
    """init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone') on a backbone
    (mmpretrain's usual form) raised TypeError."""
    from mmrepvgg.models import build_model, repvgg_classifier_cfg
    source = build_model(repvgg_classifier_cfg('A0', num_classes=1000))
    path = tmp_path / 'classifier.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    cfg = repvgg_classifier_cfg('A0', num_classes=10)
    cfg['backbone']['init_cfg'] = dict(type='Pretrained', checkpoint=str(path),
                                       prefix=prefix, map_location='cpu')
    model = build_model(cfg)
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        model.init_weights()
    for key, tensor in source.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], tensor, rtol=0, atol=0)


def test_pretrained_initializer_prefix_no_key_has_is_one_line(tmp_path):
    from mmrepvgg.models import build_model, repvgg_classifier_cfg
    path = tmp_path / 'classifier.pth'
    torch.save({'state_dict': build_model(repvgg_classifier_cfg('A0')).state_dict()}, path)
    cfg = repvgg_classifier_cfg('A0')
    cfg['backbone']['init_cfg'] = dict(type='Pretrained', checkpoint=str(path),
                                       prefix='encoder')
    model = build_model(cfg)
    with DefaultScope.overwrite_default_scope('mmrepvgg'), pytest.raises(
            CheckpointError, match=r"classifier.pth: holds no tensor under 'encoder.' "
            r"\(init_cfg prefix='encoder'\)") as error:
        model.init_weights()
    assert '\n' not in str(error.value)
