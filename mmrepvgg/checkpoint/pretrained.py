"""``init_cfg=dict(type='mmrepvgg.Pretrained', checkpoint=...)``: start from weights
through the project's reader and fitting, not mmengine's non-strict load.

mmengine's ``Pretrained`` loads whatever keys match and logs the rest: A1 weights in an A0
model, or a checkpoint in another layout, give a partly random backbone and a run that
goes on. This initializer loads with :func:`~.fitting.load_checkpoint` in ``'finetune'``
mode: the RepVGG backbone must fit exactly, in any layout; what else does not fit (a
1000-class head) keeps its initialisation and is named in one log line.
"""
from mmengine.logging import print_log
from torch import nn

from ..registry import WEIGHT_INITIALIZERS
from .fitting import load_checkpoint


@WEIGHT_INITIALIZERS.register_module(name='Pretrained')
class PretrainedInit:
    """Load ``checkpoint`` (a path, ``http(s)://`` URL or model zoo name) into the module
    it initialises (a RepVGG backbone or a whole classifier).

    Raises:
        CheckpointError: unreadable file, or a backbone that does not fit exactly.
    """

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint

    def __call__(self, module: nn.Module) -> None:
        # mmengine runs a scoped initializer before the children's own init_weights (only
        # its own 'Pretrained' comes last), which would overwrite what is loaded here: run
        # them first, and mark them done as BaseModule.init_weights does.
        for child in module.children():
            if hasattr(child, 'init_weights') and not getattr(child, 'is_init', False):
                child.init_weights()
                child.is_init = True
        fitted = load_checkpoint(module, self.checkpoint, mode='finetune')
        skipped = f'; not loaded, kept as initialised: {"; ".join(fitted.skipped)}' \
            if fitted.skipped else ''
        print_log(f'loaded {len(fitted.state_dict)} tensors from {self.checkpoint} into '
                  f'{type(module).__name__}{skipped}', logger='current')

    def _get_init_info(self) -> str:
        return f'mmrepvgg.Pretrained: load from {self.checkpoint}'
