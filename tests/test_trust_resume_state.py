"""A resumed training state is checked as data against the run before mmengine or torch
sees it (:func:`mmrepvgg.engine._resume_state.check_training_state`, called by
``RepVGGRunner`` on ``resume``).

Each attack is first shown to pass what it targets (torch's ``Optimizer.load_state_dict``,
mmengine's scheduler ``load_state_dict``), the reference for why it must be refused; the
states go through ``torch.save`` and the project's reader, as a checkpoint file would.
"""
import copy
import logging
import time
import types
import uuid

import pytest
import torch
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub
from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper
from torch import nn

from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file
from mmrepvgg.engine import _resume_state as resume_state
from mmrepvgg.engine._resume_state import check_training_state
from mmrepvgg.engine.safe_runner import RepVGGRunner

FILENAME = 'epoch_3.pth'
REFUSAL = (f'{FILENAME}: cannot resume from it, its training state does not fit this run '
           '({}); resume with the config it was saved by, or start from its weights with '
           f'--cfg-options load_from={FILENAME}')


def small_run(optimizer='SGD'):
    """A conv and a BN in two parameter groups, an optimizer with per-parameter state, two
    schedulers and a message hub, as a Runner holds them when it resumes."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    groups = [{'params': model[0].parameters()}, {'params': model[1].parameters(), 'lr': 0.01}]
    if optimizer == 'SGD':
        built = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    else:  # Adam: a step count besides per-parameter tensors, betas shared by the groups
        built = torch.optim.Adam(groups, lr=0.1)
    wrapper = OptimWrapper(built)
    schedulers = [LinearLR(wrapper, start_factor=0.1, begin=0, end=2, by_epoch=False),
                  CosineAnnealingLR(wrapper, T_max=8, begin=2, end=10, by_epoch=False)]
    hub = MessageHub.get_instance(f'resume_state_{uuid.uuid4().hex}')
    return types.SimpleNamespace(model=model, optim_wrapper=wrapper,
                                 param_schedulers=schedulers, message_hub=hub)


def trained_state(tmp_path, optimizer='SGD'):
    """The training state of a run after two steps, as the project's reader returns it
    from a file."""
    run = small_run(optimizer)
    for _ in range(2):
        loss = run.model(torch.ones(2, 3, 5, 5)).square().mean()
        run.optim_wrapper.update_params(loss)
        for scheduler in run.param_schedulers:
            scheduler.step()
    run.message_hub.update_scalar('train/loss', loss.item())
    for key, value in dict(iter=2, epoch=0, keep_ckpt_ids=[1, 2]).items():
        run.message_hub.update_info(key, value)
    return round_trip(tmp_path, {
        'optimizer': run.optim_wrapper.state_dict(),
        'param_schedulers': [scheduler.state_dict() for scheduler in run.param_schedulers],
        'message_hub': run.message_hub.state_dict()})


def round_trip(tmp_path, checkpoint):
    path = tmp_path / 'state.pth'
    torch.save(checkpoint, path)
    return load_checkpoint_file(str(path))


def check(state, run=None):
    run = run or small_run()
    check_training_state(state, run.optim_wrapper, run.param_schedulers, run.message_hub,
                         FILENAME)


def refusal_of(state, run=None) -> str:
    with pytest.raises(CheckpointError) as refused:
        check(state, run)
    message = str(refused.value)
    assert '\n' not in message
    return message


@pytest.mark.parametrize('optimizer', ['SGD', 'Adam'])
def test_a_runs_own_state_fits_a_fresh_run_of_the_same_config(tmp_path, optimizer):
    state = trained_state(tmp_path, optimizer)
    run = small_run(optimizer)
    check(state, run)
    run.optim_wrapper.load_state_dict(copy.deepcopy(state['optimizer']))  # torch takes it
    run.message_hub.load_state_dict(state['message_hub'])
    for scheduler, scheduler_state in zip(run.param_schedulers, state['param_schedulers']):
        scheduler.load_state_dict(scheduler_state)


def test_a_momentum_buffer_of_another_shape_is_refused(tmp_path):
    state = trained_state(tmp_path)
    state['optimizer']['state'][0]['momentum_buffer'] = torch.zeros(4, 3, 1, 1)
    run = small_run()
    run.optim_wrapper.load_state_dict(copy.deepcopy(state['optimizer']))  # torch takes it
    with pytest.raises(RuntimeError):  # and fails at the first step
        run.optim_wrapper.update_params(run.model(torch.ones(2, 3, 5, 5)).sum())
    assert refusal_of(state) == REFUSAL.format(
        'optimizer.state.0.momentum_buffer is a tensor of shape (4, 3, 1, 1), its parameter '
        'has shape (4, 3, 3, 3)')


def test_scheduler_state_that_replaces_the_schedulers_optimizer_is_refused(tmp_path):
    state = trained_state(tmp_path)
    state['param_schedulers'][0]['optimizer'] = {'param_groups': [{'lr': 1e9}]}
    run = small_run()
    run.param_schedulers[0].load_state_dict(state['param_schedulers'][0])
    assert run.param_schedulers[0].optimizer == {'param_groups': [{'lr': 1e9}]}
    assert refusal_of(state) == REFUSAL.format(
        "param_schedulers.0 has a key 'optimizer' this run does not have")


def test_a_billion_laughs_chain_of_shared_lists_is_refused_at_once(tmp_path):
    """torch's Optimizer.load_state_dict copies every value it finds in a parameter's
    state, leaf by leaf: 2**60 leaves here, from a file of under 3 KB."""
    chain = [0.0]
    for _ in range(60):
        chain = [chain, chain]
    state = trained_state(tmp_path)
    state['optimizer']['state'][0]['laughs'] = chain
    path = tmp_path / 'laughs.pth'
    torch.save(state['optimizer'], path)
    assert path.stat().st_size < 3000 + (tmp_path / 'state.pth').stat().st_size
    state = round_trip(tmp_path, state)
    started = time.perf_counter()
    message = refusal_of(state)
    assert time.perf_counter() - started < 1.0
    assert message == REFUSAL.format(
        'optimizer.state.0.laughs.1 is a container that appears more than once (a shared '
        'reference, which loading would copy per use)')


def test_a_state_with_more_entries_than_the_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(resume_state, 'MAX_STATE_NODES', 500)
    state = trained_state(tmp_path)
    state['message_hub']['runtime_info']['notes'] = list(range(1000))
    assert refusal_of(state) == REFUSAL.format('message_hub has over 500 entries')


def test_shared_tuples_of_numbers_stay_accepted(tmp_path):
    """Adam's param groups share one betas tuple (the defaults'), stored once by torch.save:
    copying it per use costs what its use costs."""
    state = trained_state(tmp_path, 'Adam')
    groups = state['optimizer']['param_groups']
    assert groups[0]['betas'] is groups[1]['betas']
    check(state, small_run('Adam'))


@pytest.mark.parametrize('tamper, problem', [
    (lambda state: state['optimizer']['param_groups'][1].update(lr='0.1'),
     "optimizer.param_groups.1.lr is a str, this run has a float"),
    (lambda state: state['optimizer']['param_groups'].pop(),
     'optimizer.param_groups is a sequence of 1, this run has a sequence of 2'),
    (lambda state: state['optimizer']['state'].update({7: {}}),
     'optimizer.state.7 belongs to no parameter of the param groups'),
    (lambda state: state['optimizer']['param_groups'][1].update(params=[0, 1]),
     'optimizer.param_groups names parameter 0 twice'),
    (lambda state: state['param_schedulers'].pop(),
     'param_schedulers is a sequence of 1, this run has a sequence of 2'),
    (lambda state: state['param_schedulers'][1].update(base_values=[0.1]),
     # mmengine's wrapper adds a group of base settings to the two of the optimizer.
     'param_schedulers.1.base_values is a sequence of 1, this run has a sequence of 3'),
    (lambda state: state['message_hub']['log_scalars'].update(loss=[1.0]),
     'message_hub.log_scalars.loss is a sequence of 1, not a HistoryBuffer'),
    # CheckpointHook builds the names of files it deletes from these.
    (lambda state: state['message_hub']['runtime_info'].update(keep_ckpt_ids=['../x']),
     'message_hub.runtime_info.keep_ckpt_ids is a sequence of 1, not a list of int'),
    (lambda state: state['message_hub'].pop('resumed_keys'),
     "message_hub has no key 'resumed_keys'"),
    # ...and the path of the previous best checkpoint, which it deletes.
    (lambda state: state['message_hub']['runtime_info'].update(best_ckpt=['x.pth']),
     'message_hub.runtime_info.best_ckpt is a sequence of 1, not a str'),
], ids=['lr-text', 'group-missing', 'state-of-no-parameter', 'parameter-twice',
        'scheduler-missing', 'scheduler-values', 'scalar-not-a-buffer', 'checkpoint-ids',
        'hub-key-missing', 'best-checkpoint-not-a-path'])
def test_state_unlike_the_runs_is_refused_in_one_line(tmp_path, tamper, problem):
    state = trained_state(tmp_path)
    tamper(state)
    assert refusal_of(state) == REFUSAL.format(problem)


def test_the_runner_checks_the_state_before_mmengine_sees_it(tmp_path):
    """RepVGGRunner's resume path: the refusal comes from its load_checkpoint, before the
    model is touched and before mmengine's resume reads the optimizer state."""
    state = trained_state(tmp_path)
    state['optimizer']['state'][0]['momentum_buffer'] = torch.zeros(1)
    run = small_run()
    path = tmp_path / FILENAME
    torch.save({'state_dict': {}, 'meta': {'epoch': 3, 'iter': 30}, **state}, path)
    runner = types.SimpleNamespace(
        _resuming=True, _fit_mode='exact', model=run.model, logger=logging.getLogger('test'),
        optim_wrapper=run.optim_wrapper, param_schedulers=run.param_schedulers,
        message_hub=run.message_hub, build_optim_wrapper=lambda built: built,
        build_param_scheduler=lambda built: built, work_dir=str(tmp_path), hooks=[],
        call_hook=lambda *args, **kwargs: pytest.fail('reached the model'))
    for method in ('_check_training_state', '_checkpoint_dirs'):
        setattr(runner, method, types.MethodType(getattr(RepVGGRunner, method), runner))
    with pytest.raises(CheckpointError, match='momentum_buffer is a tensor of shape'):
        RepVGGRunner.load_checkpoint(runner, str(path))


def best_checkpoint_hook_run(tmp_path, best_ckpt: str):
    """mmengine's CheckpointHook keeping the best top-1, in a run whose resumed message hub
    names ``best_ckpt`` as the previous best checkpoint."""
    hub = MessageHub.get_instance(f'best_{uuid.uuid4().hex}')
    hub.update_info('best_ckpt', best_ckpt)
    hub.update_info('best_score', 0.25)
    runner = types.SimpleNamespace(work_dir=str(tmp_path / 'work'), message_hub=hub, epoch=3,
                                   iter=30, logger=logging.getLogger('test'),
                                   save_checkpoint=lambda *args, **kwargs: None)
    return CheckpointHook(save_best='accuracy/top1', rule='greater'), runner


def test_mmengine_deletes_whatever_a_resumed_best_checkpoint_names(tmp_path):
    """The reference for the refusals below: on the next best score, CheckpointHook removes
    the file (or the whole folder) the message hub called the previous best."""
    victim = tmp_path / 'thesis'
    victim.mkdir()
    (victim / 'chapter1.tex').write_text('years of work')
    hook, runner = best_checkpoint_hook_run(tmp_path, str(victim))
    hook.before_train(runner)
    hook._save_best_checkpoint(runner, {'accuracy/top1': 0.5})
    assert not victim.exists()


@pytest.mark.parametrize('best_ckpt', ['{tmp}/thesis', '{tmp}/work/../thesis', '/etc/passwd',
                                       'thesis'])
def test_a_best_checkpoint_outside_the_runs_checkpoint_folder_is_refused(tmp_path, best_ckpt):
    state = trained_state(tmp_path)
    best_ckpt = best_ckpt.format(tmp=tmp_path)
    state['message_hub']['runtime_info'].update(best_ckpt=best_ckpt, best_score=0.25)
    with pytest.raises(CheckpointError) as refused:
        check_training_state(state, None, None, small_run().message_hub, FILENAME,
                             [str(tmp_path / 'work')])
    assert str(refused.value) == REFUSAL.format(
        f"message_hub.runtime_info.best_ckpt names {best_ckpt!r}, outside this run's "
        f"checkpoint folder {tmp_path / 'work'}, which mmengine would delete")


def test_a_best_checkpoint_the_run_wrote_is_accepted(tmp_path):
    """As CheckpointHook records it: in its out_dir joined with the work dir's name."""
    state = trained_state(tmp_path)
    best_ckpt = str(tmp_path / 'out' / 'work' / 'best_accuracy_top1_epoch_2.pth')
    state['message_hub']['runtime_info'].update(best_ckpt=best_ckpt, best_score=0.25)
    check_training_state(state, None, None, small_run().message_hub, FILENAME,
                         [str(tmp_path / 'out')])


def test_a_best_score_that_is_not_a_number_is_refused(tmp_path):
    state = trained_state(tmp_path)
    state['message_hub']['runtime_info']['best_score_accuracy/top1'] = '0.9'
    assert refusal_of(state) == REFUSAL.format(
        "message_hub.runtime_info.best_score_accuracy/top1 is a str, not a number")


def test_the_runner_confines_best_checkpoints_to_its_checkpoint_hooks_folders(tmp_path):
    runner = types.SimpleNamespace(
        work_dir=str(tmp_path / 'work'),
        hooks=[CheckpointHook(out_dir=str(tmp_path / 'out')), CheckpointHook()])
    expected = [str(tmp_path / 'out'), str(tmp_path / 'work')]
    assert RepVGGRunner._checkpoint_dirs(runner) == expected
    runner.hooks = []
    assert RepVGGRunner._checkpoint_dirs(runner) == [str(tmp_path / 'work')]
