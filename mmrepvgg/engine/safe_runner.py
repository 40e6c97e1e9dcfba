"""mmengine's Runner loading checkpoints through mmrepvgg's reader: exact fitting for
``test()``, ``val()`` and ``resume`` (mmengine's is non-strict, and its resume runs the
checkpoint's config text), the backbone exactly for ``load_from`` in ``train()``."""
from typing import Any, Optional

import torch
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop, Runner
from mmengine.structures import BaseDataElement
from mmengine.visualization import Visualizer

from ..checkpoint import CheckpointError, load_checkpoint, load_checkpoint_file
from ..registry import HOOKS, RUNNERS
from ._resume_state import check_training_state

# Where mmengine's checkpoints keep the config's Python text (code, not data).
CONFIG_TEXT_META_KEYS = ('config', 'cfg')
# Nested data elements (a segmentation sample's PixelData) are walked this deep at most.
_MAX_OUTPUT_DEPTH = 4


def _without_config_text(checkpoint: Any) -> Any:
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get('meta'), dict)):
        return checkpoint
    meta = {key: value for key, value in checkpoint['meta'].items()
            if key not in CONFIG_TEXT_META_KEYS}
    return {**checkpoint, 'meta': meta}


def _check_resumable(checkpoint: Any, filename: str) -> None:
    """Raise unless ``checkpoint`` was saved by a training run."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    lacking = [f'meta.{key}' for key in ('epoch', 'iter')
               if not isinstance(meta, dict) or not isinstance(meta.get(key), int)]
    if not lacking and 'message_hub' not in checkpoint:
        lacking = ['message_hub']
    if lacking:
        raise CheckpointError(
            f'{filename}: cannot resume from it, it has no {lacking[0]} (it was not saved '
            'by a training run: a converted, published or hand-made file); to start from '
            f'its weights, train with --cfg-options load_from={filename}')


def _fit_into_runner(runner: Runner, checkpoint: dict, filename: str, mode: str) -> None:
    runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    fitted = load_checkpoint(model, checkpoint, mode, name=filename)
    if fitted.skipped:
        runner.logger.warning(
            f'notice: {filename}: {len(fitted.skipped)} tensors not loaded, kept as '
            f'initialised (fine-tuning): {"; ".join(fitted.skipped)}')
    runner._has_loaded = True
    runner.logger.info(f'Load checkpoint from {filename}')


def _first_non_finite_field(value: Any, name: str, depth: int = 0) -> Optional[str]:
    """The name of the first float tensor in ``value`` (a tensor, a data element or a list of
    them) holding NaN or an infinity, else None."""
    if isinstance(value, torch.Tensor):
        finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
        return None if finite else name
    if depth >= _MAX_OUTPUT_DEPTH:
        return None
    if isinstance(value, BaseDataElement):
        items = ((f'{name}.{key}', field) for key, field in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f'{name}[{index}]', field) for index, field in enumerate(value))
    else:
        return None
    return next((found for found in (_first_non_finite_field(field, field_name, depth + 1)
                                     for field_name, field in items) if found), None)


class _FiniteOutputsCheck(Hook):
    """Refuse a model whose test outputs hold NaN or an infinity: its metrics (0 %, exit 0)
    would describe damaged weights. Validation in training is left alone (a diverging run
    shows it in its metrics and keeps its checkpoints)."""
    priority = 'VERY_HIGH'

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        field = _first_non_finite_field(outputs, 'outputs')
        if field is None:
            return
        model = getattr(runner.model, 'name', None) or runner._load_from or 'the model'
        raise CheckpointError(
            f'{model}: gives NaN or infinite outputs ({field}) on test batch {batch_idx}; '
            'its weights are damaged (NaN, or too large for float32), so it is not '
            'evaluated; export or convert it again from a good checkpoint')


@RUNNERS.register_module()
class RepVGGRunner(Runner):
    """:class:`mmengine.runner.Runner` whose ``load_checkpoint`` is safe and exact, and whose
    test outputs must be finite; each refusal is one CheckpointError line."""

    # 'exact' (test, val, resume) or 'finetune' (load_from of a training run).
    _fit_mode = 'exact'
    _resuming = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_hook(_FiniteOutputsCheck())

    def build_logger(self, *args, **kwargs) -> MMLogger:
        """mmengine's logger under a name (``_2``, ``_3``... added) no earlier run of this
        process holds: mmengine names it by config and start second and reuses instances."""
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
        """mmengine's resume; a training state that does not fit this run is a CheckpointError."""
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
        """Read ``filename`` safely, check it fits the model, load it and return it (on the
        CPU; the fitting maps wrapper prefixes, so ``revise_keys`` is unused)."""
        checkpoint = _without_config_text(load_checkpoint_file(filename))
        exact = strict or self._resuming or self._fit_mode == 'exact'
        if self._resuming:
            _check_resumable(checkpoint, filename)
            self._check_training_state(checkpoint, filename)
        _fit_into_runner(self, checkpoint, filename, 'exact' if exact else 'finetune')
        return checkpoint

    def _check_training_state(self, checkpoint: dict, filename: str) -> None:
        # Build the optimizer and schedulers as mmengine's resume does next, to check against.
        has_optimizer_state = 'optimizer' in checkpoint or 'param_schedulers' in checkpoint
        if has_optimizer_state and self.optim_wrapper is not None:
            self.optim_wrapper = self.build_optim_wrapper(self.optim_wrapper)
            if self.param_schedulers is not None:
                self.param_schedulers = self.build_param_scheduler(self.param_schedulers)
        check_training_state(checkpoint, self.optim_wrapper if has_optimizer_state else None,
                             self.param_schedulers, self.message_hub, filename,
                             self._checkpoint_dirs())

    def _checkpoint_dirs(self) -> list:
        # Each CheckpointHook writes to its out_dir (before_train appends the work dir's
        # name) or the work dir; a run without one deletes no best checkpoint.
        return [hook.out_dir or self.work_dir for hook in self.hooks
                if isinstance(hook, CheckpointHook)] or [self.work_dir]


@HOOKS.register_module()
class RepVGGCheckpointGuard(Hook):
    """For a tool that builds mmengine's own Runner whatever ``runner_type`` says (mmseg's
    ``tools/test.py``): loads ``load_from`` as :class:`RepVGGRunner` would, before mmengine's
    non-strict load (then skipped), and refuses ``resume``."""
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
