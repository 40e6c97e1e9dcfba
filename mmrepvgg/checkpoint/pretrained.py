"""``init_cfg=dict(type='mmrepvgg.Pretrained', checkpoint=...)``: mmengine's ``Pretrained``
through the project's reader and :func:`~.fitting.load_checkpoint` in ``'finetune'`` mode."""
from typing import Optional

from mmengine.logging import print_log
from torch import nn

from ..model_zoo import checkpoint_source
from ..registry import WEIGHT_INITIALIZERS
from .errors import CheckpointError
from .fitting import load_checkpoint
from ._layouts import LayoutError, _unwrap_state_dict
from ._reader import load_checkpoint_file


@WEIGHT_INITIALIZERS.register_module(name='Pretrained')
class _PretrainedInit:
    """Load ``checkpoint`` (a path, ``http(s)://`` URL or model zoo name), or only its
    tensors under ``prefix.`` without it, into the module it initialises; ``map_location``
    is unused (tensors are read on the CPU). Raises :class:`CheckpointError`."""

    def __init__(self, checkpoint: str, prefix: Optional[str] = None,
                 map_location: Optional[str] = None):
        self.checkpoint, self.prefix = checkpoint, prefix

    def _source(self):
        if not self.prefix:
            return self.checkpoint
        try:
            state_dict = _unwrap_state_dict(load_checkpoint_file(
                checkpoint_source(self.checkpoint)))
        except LayoutError as error:
            raise CheckpointError(f'{self.checkpoint}: {error}') from None
        start = f'{self.prefix.rstrip(".")}.'
        selected = {key[len(start):]: tensor for key, tensor in state_dict.items()
                    if key.startswith(start)}
        if not selected:
            raise CheckpointError(f'{self.checkpoint}: holds no tensor under {start!r} '
                                  f"(init_cfg prefix={self.prefix!r}), e.g. "
                                  f'{next(iter(state_dict))!r}; set the prefix its keys have, '
                                  'or drop it')
        return selected

    def __call__(self, module: nn.Module) -> None:
        # mmengine runs a scoped initializer before the children's own init_weights (only
        # its own 'Pretrained' comes last), which would overwrite what is loaded here: run
        # them first, and mark them done as BaseModule.init_weights does.
        for child in module.children():
            if hasattr(child, 'init_weights') and not getattr(child, 'is_init', False):
                child.init_weights()
                child.is_init = True
        fitted = load_checkpoint(module, self._source(), mode='finetune',
                                 name=self.checkpoint)
        skipped = f'; not loaded, kept as initialised: {"; ".join(fitted.skipped)}' \
            if fitted.skipped else ''
        print_log(f'loaded {len(fitted.state_dict)} tensors from {self.checkpoint} into '
                  f'{type(module).__name__}{skipped}', logger='current')
