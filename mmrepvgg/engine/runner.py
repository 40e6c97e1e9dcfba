"""What tools/train.py and tools/test.py do: :func:`run_train` and :func:`run_test`, which
other tools and scripts call in process (``run_test`` returns the metrics that mmengine's
``Runner.test()`` returns)."""
import contextlib
import json
import os
import re
from typing import Any, Dict, Optional

from mmengine.config import Config
from mmengine.device import get_device
from mmengine.runner import Runner

from ..checkpoint import atomic_output
from ..checkpoint.fitting import checkpoint_file
from ..registry import RUNNERS
from ._config import ConfigError, check_dataloaders, load_repvgg_config
from ._dist import setup_distributed
from .safe_runner import RepVGGRunner


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
    if os.path.exists(cfg.work_dir) and not os.path.isdir(cfg.work_dir):
        raise ConfigError(f'--work-dir {cfg.work_dir}: is a file, not a folder; pass a '
                          'folder for the logs and checkpoints')


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
        ConfigError: ``--amp`` without an accelerator, a ``resume`` file that does not
            exist, a dataloader that cannot work (see :func:`check_dataloaders`), or a
            launcher without its environment.
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
    check_dataloaders(cfg, ('train_dataloader', 'val_dataloader'), config_path)
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
        ConfigError: the checkpoint is missing, ``out`` is not a new ``.pkl`` path, the
            test dataloader cannot work, or the launcher lacks its environment.
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
    check_dataloaders(cfg, ('test_dataloader', ), config_path)
    setup_distributed(cfg, launcher)
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The Runner of ``cfg``: :class:`RepVGGRunner`, or the ``runner_type`` it names.

    Raises:
        ConfigError: an entry of the config does not build (unknown type, wrong
            argument); the message is the builder's, which names the class.
    """
    try:
        if 'runner_type' in cfg:
            return RUNNERS.build(cfg)
        return RepVGGRunner.from_cfg(cfg)
    except (KeyError, TypeError, ValueError) as error:
        message = str(error).strip().strip('"')
        raise ConfigError(f'the config does not build: {message}') from error


def run_train(config_path: str,
              work_dir: Optional[str] = None,
              cfg_options: Optional[Dict[str, Any]] = None,
              resume: Optional[str] = None,
              amp: bool = False,
              auto_scale_lr: bool = False,
              launcher: str = 'none') -> Runner:
    """Train as tools/train.py does (see :func:`prepare_train_config` for the options).

    Returns:
        The Runner after training (its ``work_dir`` holds the checkpoints).

    Raises:
        ConfigError, CheckpointError: bad input, before training starts.
    """
    cfg = load_repvgg_config(config_path, cfg_options)
    prepare_train_config(cfg, config_path, work_dir, resume, amp, auto_scale_lr, launcher)
    runner = build_runner(cfg)
    runner.train()
    return runner


def run_test(config_path: str,
             checkpoint_path: str,
             work_dir: Optional[str] = None,
             cfg_options: Optional[Dict[str, Any]] = None,
             out: Optional[str] = None,
             launcher: str = 'none') -> Dict[str, float]:
    """Evaluate a checkpoint as tools/test.py does (see :func:`prepare_test_config`);
    ``checkpoint_path`` may also be an ``http(s)://`` URL or a model zoo name, fetched
    once the config has been read.

    The Runner loads the checkpoint safely and refuses one that does not fit the model
    exactly (:class:`~mmrepvgg.engine.RepVGGRunner`), before any image is evaluated.

    Returns:
        The metrics of ``Runner.test()``, e.g. ``{'accuracy/top1': 95.0}``.

    Raises:
        ConfigError, CheckpointError: bad input, before any image is evaluated.
        FileExistsError: ``out`` appeared while the test ran (it is kept).
    """
    cfg = load_repvgg_config(config_path, cfg_options)
    checkpoint = checkpoint_file(checkpoint_path)
    prepare_test_config(cfg, config_path, checkpoint, work_dir, out, launcher)
    with contextlib.ExitStack() as outputs:
        if out:  # the dump lands in a partial file, published when complete
            cfg.test_evaluator[-1]['out_file_path'] = outputs.enter_context(atomic_output(
                out, inputs=(config_path, checkpoint), suffix='.pkl'))
        return build_runner(cfg).test()
