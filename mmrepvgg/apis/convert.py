"""One-call conversion of train-form models to their deploy form."""
import copy
from typing import Optional

from torch import nn

from ..checkpoint import save_checkpoint_atomic
from ..models import reparameterize_blocks


def repvgg_convert(train_model: nn.Module,
                   save_path: Optional[str] = None,
                   inplace: bool = False,
                   overwrite: bool = False) -> nn.Module:
    """Return the deploy form of any model holding RepVGG blocks; optionally save it.

    Args:
        train_model: a train-form backbone, classifier or detector. Its BN running
            statistics define the fused weights (the eval-mode function is preserved).
        save_path: if given, ``{'state_dict': deploy_state_dict}`` is written there
            atomically, as mmengine writes checkpoints.
        inplace: fuse ``train_model`` itself instead of a deep copy.
        overwrite: allow replacing an existing ``save_path``.

    Returns:
        The deploy model, in eval mode.

    Raises:
        ValueError: ``train_model`` holds no train-form RepVGG block.
    """
    deploy_model = train_model if inplace else copy.deepcopy(train_model)
    if reparameterize_blocks(deploy_model) == 0:
        raise ValueError('the model holds no train-form RepVGG block: it is already '
                         'deployed or is not a RepVGG model; nothing to convert')
    deploy_model.eval()
    if save_path is not None:
        save_checkpoint_atomic({'state_dict': deploy_model.state_dict()}, save_path,
                               overwrite=overwrite)
    return deploy_model
