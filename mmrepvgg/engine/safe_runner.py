"""mmengine's Runner, loading checkpoints through mmrepvgg's safe reader and fitting.

mmengine's ``Runner.load_checkpoint`` (behind ``load_from``, ``resume`` and
``load_or_resume``) loads non-strictly: a tensor of another shape, a stray tensor or a
missing layer only produce a log line, and the run goes on with random layers. This Runner
reads the file with :func:`mmrepvgg.checkpoint.load_checkpoint_file` (no pickle code runs)
and loads it with :func:`mmrepvgg.checkpoint.load_checkpoint`; the checkpoint it hands
back to mmengine has no config text in its meta (mmengine's ``resume`` would run
``Config.fromstring`` on it: a config is code, a checkpoint only data):

- ``test()`` / ``val()``: the checkpoint must hold exactly the model's tensors;
- ``train()`` with ``load_from`` (fine-tuning): the RepVGG backbone must fit exactly; the
  other tensors that do not (a 1000-class ImageNet head) keep their initialisation and are
  listed in one warning;
- ``resume``: exact, and the file must be a training checkpoint (``meta.epoch``,
  ``meta.iter``, ``message_hub``) whose training state (optimizer, schedulers, message
  hub) fits the run as data (:func:`~mmrepvgg.engine._resume_state.check_training_state`).

The shipped configs name this Runner (``runner_type``), so mmpretrain's, mmseg's and
mmdet's own tools build it too; :class:`RepVGGCheckpointGuard` covers a tool that ignores
``runner_type`` (docs/trust_in_other_tools.md).

A model whose test outputs hold NaN or an infinity is refused at the first such batch
(:class:`~mmrepvgg.engine._finite_outputs.FiniteOutputsCheck`), whatever it is (PyTorch,
an exported file, PyTorch INT8).

Every refusal is a :class:`~mmrepvgg.checkpoint.CheckpointError` with one line to show.
"""
from typing import Any

from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, Runner
from mmengine.visualization import Visualizer

from ..checkpoint import CheckpointError, load_checkpoint, load_checkpoint_file
from ..registry import HOOKS, RUNNERS
from ._finite_outputs import FiniteOutputsCheck
from ._resume_state import check_training_state

RESUME_META_KEYS = ('epoch', 'iter')
# Where mmengine's checkpoints keep the config's Python text.
CONFIG_TEXT_META_KEYS = ('config', 'cfg')


def _without_config_text(checkpoint: Any) -> Any:
    """``checkpoint`` with ``meta`` lacking :data:`CONFIG_TEXT_META_KEYS` (a shallow copy)."""
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get('meta'), dict)):
        return checkpoint
    meta = {key: value for key, value in checkpoint['meta'].items()
            if key not in CONFIG_TEXT_META_KEYS}
    return {**checkpoint, 'meta': meta}


def _check_resumable(checkpoint: Any, filename: str) -> None:
    """Raise unless ``checkpoint`` was saved by a training run that can continue.

    Raises:
        CheckpointError: no ``meta.epoch``/``meta.iter`` integers or no ``message_hub``.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    lacking = [f'meta.{key}' for key in RESUME_META_KEYS
               if not isinstance(meta, dict) or not isinstance(meta.get(key), int)]
    if not lacking and 'message_hub' not in checkpoint:
        lacking = ['message_hub']
    if lacking:
        raise CheckpointError(
            f'{filename}: cannot resume from it, it has no {lacking[0]} (it was not saved '
            'by a training run: a converted, published or hand-made file); to start from '
            f'its weights, train with --cfg-options load_from={filename}')


def _fit_into_runner(runner: Runner, checkpoint: dict, filename: str, mode: str) -> None:
    """Load the read ``checkpoint`` into ``runner``'s model, fitted in ``mode``."""
    runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    fitted = load_checkpoint(model, checkpoint, mode, name=filename)
    if fitted.skipped:
        runner.logger.warning(
            f'notice: {filename}: {len(fitted.skipped)} tensors not loaded, kept as '
            f'initialised (fine-tuning): {"; ".join(fitted.skipped)}')
    runner._has_loaded = True
    runner.logger.info(f'Load checkpoint from {filename}')


@RUNNERS.register_module()
class RepVGGRunner(Runner):
    """:class:`mmengine.runner.Runner` whose ``load_checkpoint`` is safe and exact (see
    the module docstring); built by :func:`mmrepvgg.engine.runner.build_runner`."""

    # 'exact' (test, val, resume) or 'finetune' (load_from of a training run).
    _fit_mode = 'exact'
    _resuming = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_hook(FiniteOutputsCheck())

    def build_logger(self, *args, **kwargs) -> MMLogger:
        """mmengine's logger, under a name no earlier run of this process holds.

        mmengine names a run's logger and visualizer by its config and the second it
        started, and hands back an existing instance of that name: a second run started
        by the same process within that second would log to the first run's streams
        and files. A taken name gets a suffix (``_2``, ``_3``, ...).
        """
        base_name, run = self._experiment_name, 1
        while (MMLogger.check_instance_created(self._experiment_name)
               or Visualizer.check_instance_created(self._experiment_name)):
            run += 1
            self._experiment_name = f'{base_name}_{run}'
        return super().build_logger(*args, **kwargs)

    def train(self):
        self._fit_mode = 'finetune'
        try:
            return super().train()
        finally:
            self._fit_mode = 'exact'

    def resume(self, filename: str, *args, **kwargs) -> None:
        """mmengine's resume, reading through :meth:`load_checkpoint`.

        Raises:
            CheckpointError: also when the training state (message hub, optimizer,
                schedulers) does not fit this run.
        """
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, AssertionError,
                RuntimeError) as error:  # what mmengine and torch raise for such state
            if isinstance(error, CheckpointError):
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else ''
            raise CheckpointError(
                f'{filename}: its training state does not fit this run '
                f'({type(error).__name__}: {message[:200]}); resume with the config it was '
                'saved by, or start from its weights with --cfg-options load_from=...'
            ) from error
        finally:
            self._resuming = False

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys=None) -> dict:
        """Read ``filename`` safely, check it fits the model, load it; return it.

        ``map_location`` and ``revise_keys`` are mmengine's and not needed: tensors are
        read on the CPU and copied to the model's device by ``load_state_dict``; wrapper
        prefixes (``module.``) and other layouts are mapped by the fitting.

        Raises:
            CheckpointError: unreadable, not resumable, or not fitting the model.
        """
        checkpoint = _without_config_text(load_checkpoint_file(filename))
        exact = strict or self._resuming or self._fit_mode == 'exact'
        if self._resuming:
            _check_resumable(checkpoint, filename)
            self._check_training_state(checkpoint, filename)
        _fit_into_runner(self, checkpoint, filename, 'exact' if exact else 'finetune')
        return checkpoint

    def _check_training_state(self, checkpoint: dict, filename: str) -> None:
        """Build the optimizer and schedulers as mmengine's resume does next (``train()``
        has built them already), and check the stored state against them."""
        has_optimizer_state = 'optimizer' in checkpoint or 'param_schedulers' in checkpoint
        if has_optimizer_state and self.optim_wrapper is not None:
            self.optim_wrapper = self.build_optim_wrapper(self.optim_wrapper)
            if self.param_schedulers is not None:
                self.param_schedulers = self.build_param_scheduler(self.param_schedulers)
        check_training_state(checkpoint, self.optim_wrapper if has_optimizer_state else None,
                             self.param_schedulers, self.message_hub, filename)


@HOOKS.register_module()
class RepVGGCheckpointGuard(Hook):
    """Where a tool builds mmengine's own Runner whatever the config's ``runner_type``
    (mmseg's ``tools/test.py``), loads ``load_from`` as :class:`RepVGGRunner` would, before
    mmengine's non-strict load (``before_run`` comes first, and mmengine skips its load
    once one was made), and refuses ``resume``. With :class:`RepVGGRunner` it does nothing.

    Raises:
        CheckpointError: unreadable, not fitting, or a resume.
    """
    priority = 'VERY_HIGH'

    def before_run(self, runner: Runner) -> None:
        if isinstance(runner, RepVGGRunner) or runner._has_loaded or not (
                runner._load_from or runner._resume):
            return
        if runner._resume:
            raise CheckpointError(
                'this tool built mmengine\'s own Runner, which would resume without the '
                'project\'s checks; resume with a tool that builds the config\'s runner_type '
                '(this project\'s, mmpretrain\'s, mmseg\'s or mmdet\'s tools/train.py)')
        filename = runner._load_from
        training = isinstance(runner._train_loop, BaseLoop)  # built by train() only
        _fit_into_runner(runner, _without_config_text(load_checkpoint_file(filename)),
                         filename, 'finetune' if training else 'exact')
