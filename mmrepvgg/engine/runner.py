"""What tools/train.py and tools/test.py do between parsing arguments and running."""
import json
import os
import re
from typing import Dict, Optional

from mmengine.config import Config
from mmengine.device import get_device
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint_file, unwrap_state_dict
from ..registry import MODELS
from .config import ConfigError, load_repvgg_config
from .dist import setup_distributed


TEST_METRICS_PREFIX = 'test metrics: '


def format_test_metrics(metrics: Dict[str, float]) -> str:
    """The line tools/test.py prints last, e.g. ``test metrics: {"accuracy/top1": 96.1}``."""
    return TEST_METRICS_PREFIX + json.dumps(metrics)


def parse_test_metrics(output: str) -> Dict[str, float]:
    """The metrics of the last :func:`format_test_metrics` line in a tool's output.

    Raises:
        ValueError: ``output`` holds no such line.
    """
    lines = re.findall(f'^{re.escape(TEST_METRICS_PREFIX)}(.*)$', output, flags=re.M)
    if not lines:
        raise ValueError(f'no line starting with {TEST_METRICS_PREFIX!r} in the output')
    return json.loads(lines[-1])


def _set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    # Priority as in OpenMMLab tools: command line, then the config, then work_dirs/<name>.
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        config_name = os.path.splitext(os.path.basename(config_path))[0]
        cfg.work_dir = os.path.join('work_dirs', config_name)


def prepare_train_config(cfg: Config,
                         config_path: str,
                         work_dir: Optional[str] = None,
                         resume: Optional[str] = None,
                         amp: bool = False,
                         auto_scale_lr: bool = False,
                         launcher: str = 'none') -> Config:
    """Apply tools/train.py's options to ``cfg`` (in place) and start distribution.

    Args:
        cfg: from :func:`load_repvgg_config`.
        config_path: the config file, naming the default work dir.
        work_dir: where logs and checkpoints go; defaults to ``cfg.work_dir`` or
            ``work_dirs/<config name>``.
        resume: ``'auto'`` resumes from the work dir's latest checkpoint, a path from that
            checkpoint, None starts afresh.
        amp: mixed precision (``AmpOptimWrapper``); needs a GPU.
        auto_scale_lr: scale the lr linearly from ``auto_scale_lr.base_batch_size`` to
            the actual total batch.
        launcher: ``'none'``, ``'pytorch'`` (torchrun) or ``'slurm'``.

    Raises:
        ConfigError: ``--amp`` without an accelerator, or a ``resume`` file that does not
            exist.
    """
    _set_work_dir(cfg, config_path, work_dir)
    if amp:
        if get_device() == 'cpu':
            raise ConfigError('--amp needs a GPU (mmengine\'s AmpOptimWrapper has no CPU '
                              'mode); drop --amp on this machine')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        if not os.path.isfile(resume):
            raise ConfigError(f'--resume {resume}: no such checkpoint file; pass a file from '
                              'the work dir, or --resume alone for its latest checkpoint')
        cfg.resume, cfg.load_from = True, resume
    if auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    setup_distributed(cfg, launcher)
    return cfg


def prepare_test_config(cfg: Config,
                        config_path: str,
                        checkpoint_path: str,
                        work_dir: Optional[str] = None,
                        out: Optional[str] = None,
                        launcher: str = 'none') -> Config:
    """Apply tools/test.py's options to ``cfg`` (in place) and start distribution.

    Args:
        checkpoint_path: the weights to test, in the form ``cfg`` builds (a deploy
            config needs a re-parameterized checkpoint).
        out: a new ``.pkl`` file to dump every prediction into.

    Raises:
        ConfigError: the checkpoint is missing, or ``out`` is not a new ``.pkl`` path.
    """
    if not os.path.isfile(checkpoint_path):
        raise ConfigError(f'{checkpoint_path}: no such checkpoint file; check the path')
    _set_work_dir(cfg, config_path, work_dir)
    cfg.load_from = checkpoint_path
    if out is not None:
        if not out.endswith(('.pkl', '.pickle')):
            raise ConfigError(f'--out {out}: predictions are dumped as a pickle; '
                              'name a .pkl file')
        if os.path.exists(out):
            raise ConfigError(f'--out {out}: exists; choose a new file name')
        evaluators = cfg.test_evaluator
        if isinstance(evaluators, dict):
            evaluators = [evaluators]
        cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=out)]
    setup_distributed(cfg, launcher)
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The Runner of ``cfg`` (``runner_type`` chooses a custom one).

    Raises:
        ConfigError: an entry of the config does not build (unknown type, wrong
            argument); the message is the builder's, which names the class.
    """
    try:
        if 'runner_type' in cfg:
            from mmengine.registry import RUNNERS
            return RUNNERS.build(cfg)
        return Runner.from_cfg(cfg)
    except (KeyError, TypeError, ValueError) as error:
        message = str(error).strip().strip('"')
        raise ConfigError(f'the config does not build: {message}') from error


def check_checkpoint_fits(model: nn.Module, checkpoint_path: str) -> None:
    """Fail early if ``checkpoint_path`` does not hold exactly ``model``'s tensors.

    mmengine loads ``load_from`` non-strictly and would test a model with random layers;
    the usual cause is a train-form checkpoint with a deploy config or the other way round.

    Raises:
        CheckpointError: naming the first missing and unexpected keys and the fix.
    """
    model = getattr(model, 'module', model)  # DDP wrapper
    checkpoint_keys = set(unwrap_state_dict(load_checkpoint_file(checkpoint_path)))
    model_keys = set(model.state_dict())
    missing, unexpected = model_keys - checkpoint_keys, checkpoint_keys - model_keys
    if not missing and not unexpected:
        return
    deploy_keys = any('branch_reparam' in key for key in checkpoint_keys)
    model_deploy = any('branch_reparam' in key for key in model_keys)
    if deploy_keys and not model_deploy:
        hint = 'it is a deploy (re-parameterized) checkpoint: test it with a config from ' \
               'configs/deploy/'
    elif model_deploy and not deploy_keys:
        hint = 'it is a train-form checkpoint: convert it with ' \
               'tools/reparameterize_repvgg.py, or test it with the train config'
    else:
        hint = 'it was saved from another architecture; use the matching config'
    raise CheckpointError(
        f'{checkpoint_path} does not fit the model ({len(missing)} missing keys, e.g. '
        f'{sorted(missing)[:1]}; {len(unexpected)} unexpected, e.g. '
        f'{sorted(unexpected)[:1]}): {hint}')


def load_model(config_path: str, checkpoint_path: str) -> nn.Module:
    """The model of ``config_path`` with exactly the tensors of ``checkpoint_path``, in
    eval mode on the CPU.

    Raises:
        ConfigError: see :func:`load_repvgg_config`.
        CheckpointError: unreadable file, or tensors that do not fit the model.
    """
    cfg = load_repvgg_config(config_path)
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        model = MODELS.build(cfg.model)
    check_checkpoint_fits(model, checkpoint_path)
    model.load_state_dict(unwrap_state_dict(load_checkpoint_file(checkpoint_path)))
    return model.eval()
