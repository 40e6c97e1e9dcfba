"""mmengine's Runner (load_from, resume) and init_cfg Pretrained read checkpoints through
mmrepvgg's safe reader once mmrepvgg is imported."""
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner
from torch import nn

import mmrepvgg.checkpoint.mmengine_loading as mmengine_loading
from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file
from test_checkpoint_safe_io import eval_through_rebuild_from_type, save_attack


class ToyRegressor(BaseModel):
    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='loss'):
        return {'loss': (self.linear(inputs) - targets).pow(2).mean()}


def toy_runner(work_dir, max_iters, **options):
    """A Runner training ToyRegressor for ``max_iters`` iterations, checkpointing every 2."""
    samples = [dict(inputs=torch.tensor([float(index), 1.0]), targets=torch.tensor([0.5]))
               for index in range(4)]
    return Runner(
        model=ToyRegressor(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=samples, batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmengine', **options)


@pytest.mark.parametrize('source', ['work_dirs/epoch_1.pth', 'http://host/a.pth',
                                    'https://host/a.pth'])
def test_local_and_http_sources_are_routed_to_the_safe_reader(source):
    loader = CheckpointLoader._get_checkpoint_loader(source)
    assert loader is mmengine_loading.load_from_mmrepvgg_safe


def test_runner_resumes_from_its_own_checkpoint_through_the_safe_reader(tmp_path, monkeypatch):
    toy_runner(tmp_path / 'first', max_iters=2).train()
    checkpoint = str(tmp_path / 'first' / 'iter_2.pth')
    read = []

    def spying_reader(path, map_location):
        read.append(path)
        return load_checkpoint_file(path, map_location=map_location)

    monkeypatch.setattr(mmengine_loading, 'load_checkpoint_file', spying_reader)

    resumed = toy_runner(tmp_path / 'second', max_iters=3, load_from=checkpoint, resume=True)
    resumed.train()

    assert read == [checkpoint]
    assert resumed.iter == 3
    losses = resumed.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 3  # two resumed from the checkpoint, one new


def test_runner_load_from_an_eval_payload_is_refused(tmp_path):
    marker = tmp_path / 'PWNED'
    evil = save_attack(tmp_path / 'evil.pth', eval_through_rebuild_from_type, marker)
    runner = toy_runner(tmp_path / 'work', max_iters=1, load_from=evil)
    with pytest.raises(CheckpointError, match='evil.pth: refused, it calls builtins.getattr'):
        runner.train()
    assert not marker.exists()


def test_init_cfg_pretrained_with_an_eval_payload_is_refused(tmp_path):
    marker = tmp_path / 'PWNED'
    evil = save_attack(tmp_path / 'evil.pth', eval_through_rebuild_from_type, marker)
    model = ToyRegressor(init_cfg=dict(type='Pretrained', checkpoint=evil))
    with pytest.raises(CheckpointError, match='evil.pth: refused'):
        model.init_weights()
    assert not marker.exists()
