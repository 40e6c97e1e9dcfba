"""The RepVGG and QARepVGG blocks: three branches while training, one 3x3 conv deployed."""
import copy
from collections import OrderedDict
from typing import Optional

import torch
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from mmpretrain.models.utils import SELayer
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..reparam import (BatchNormStats, KernelBias, fuse_qarepvgg_branches,
                       fuse_repvgg_branches)


def _batch_norm_stats(norm: _BatchNorm) -> BatchNormStats:
    """The eval-mode tensors of a BatchNorm, not detached (the fusion stays differentiable)."""
    if norm.running_mean is None:
        raise ValueError(f'{type(norm).__name__} has no running statistics '
                         '(track_running_stats=False) and cannot be fused')
    return BatchNormStats(norm.running_mean, norm.running_var, norm.weight, norm.bias,
                          norm.eps)


def _build_batch_norm(norm_cfg: dict, channels: int) -> _BatchNorm:
    # Only a BatchNorm is a per-channel affine map in eval mode, which folds into a conv;
    # refused at build (as mmpretrain does) rather than at conversion after training.
    norm = build_norm_layer(norm_cfg, channels)[1]
    if not isinstance(norm, _BatchNorm):
        raise TypeError(f'RepVGG blocks need a BatchNorm norm_cfg (BN, SyncBN), got '
                        f'{norm_cfg.get("type")!r} ({type(norm).__name__}), which cannot '
                        'be fused into a conv; use norm_cfg=dict(type=\'BN\')')
    return norm


class RepVGGBlock(BaseModule):
    """``act(se(conv3x3_bn(x) + conv1x1_bn(x) + bn(x)))``, deployed ``act(se(conv3x3(x)))``:
    ``(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride))``, the identity branch
    only where ``in_channels == out_channels`` and ``stride == 1``. Arguments and module names
    are mmpretrain's ``RepVGGBlock``'s; ``padding`` must be None or ``dilation`` (only then do
    the branches add up pixel by pixel); any ``padding_mode`` of the 3x3 conv fuses (the centre
    tap never reads padding); ``deploy`` builds the fused form.
    """

    # The modules only the train form has; fusing replaces them by ``branch_reparam``.
    train_modules = ('branch_3x3', 'branch_1x1', 'branch_norm')

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 padding: Optional[int] = None,
                 dilation: int = 1,
                 groups: int = 1,
                 padding_mode: str = 'zeros',
                 se_cfg: Optional[dict] = None,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 deploy: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if padding is not None and padding != dilation:
            raise ValueError(f'RepVGG blocks need padding == dilation (got padding '
                             f'{padding}, dilation {dilation}): only then do the branches '
                             'add up pixel by pixel; leave padding unset')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.padding = dilation
        self.dilation = dilation
        self.groups = groups
        self.padding_mode = padding_mode
        self.se_cfg = se_cfg
        self.with_cp = with_cp
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.deploy = deploy
        if deploy:
            self.branch_reparam = self._conv(3, bias=True)
        else:
            self._build_train_branches()
        self.se_layer = None if se_cfg is None else SELayer(out_channels, **se_cfg)
        self.act = build_activation_layer(act_cfg)

    @property
    def has_identity(self) -> bool:
        return self.in_channels == self.out_channels and self.stride == 1

    def _build_train_branches(self) -> None:
        self.branch_3x3 = self._conv_norm(3)
        self.branch_1x1 = self._conv_norm(1)
        self.branch_norm = (_build_batch_norm(self.norm_cfg, self.in_channels)
                            if self.has_identity else None)

    def _conv(self, kernel_size: int, bias: bool, **factory_kwargs) -> nn.Conv2d:
        is_3x3 = kernel_size == 3
        return build_conv_layer(
            self.conv_cfg, self.in_channels, self.out_channels, kernel_size,
            stride=self.stride, padding=self.dilation if is_3x3 else 0,
            dilation=self.dilation if is_3x3 else 1, groups=self.groups, bias=bias,
            padding_mode=self.padding_mode if is_3x3 else 'zeros', **factory_kwargs)

    def _conv_norm(self, kernel_size: int, with_norm: bool = True) -> nn.Sequential:
        layers = OrderedDict(conv=self._conv(kernel_size, bias=False))
        if with_norm:
            layers['norm'] = _build_batch_norm(self.norm_cfg, self.out_channels)
        return nn.Sequential(layers)

    def _branch_sum(self, x: Tensor) -> Tensor:
        out = self.branch_3x3(x) + self.branch_1x1(x)
        return out if self.branch_norm is None else out + self.branch_norm(x)

    def _pre_activation(self, x: Tensor) -> Tensor:
        out = self.branch_reparam(x) if self.deploy else self._branch_sum(x)
        return out if self.se_layer is None else self.se_layer(out)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            return self.act(checkpoint(self._pre_activation, x, use_reentrant=False))
        return self.act(self._pre_activation(x))

    def _fuse_train_branches(self) -> KernelBias:
        return fuse_repvgg_branches(
            self.branch_3x3.conv.weight, _batch_norm_stats(self.branch_3x3.norm),
            self.branch_1x1.conv.weight, _batch_norm_stats(self.branch_1x1.norm),
            None if self.branch_norm is None else _batch_norm_stats(self.branch_norm),
            self.groups)

    def get_equivalent_kernel_bias(self) -> KernelBias:
        """The deploy conv's ``(kernel (C_out, C_in // groups, 3, 3), bias (C_out,))``, as the
        official one: differentiable, so that a loss on it (custom L2, QAT) trains the branches."""
        if self.deploy:
            return self.branch_reparam.weight, self.branch_reparam.bias
        return self._fuse_train_branches()

    @torch.no_grad()
    def switch_to_deploy(self) -> 'RepVGGBlock':
        """Fuse the branches into one 3x3 conv in place (a frozen block stays frozen)."""
        if self.deploy:
            return self
        kernel, bias = self.get_equivalent_kernel_bias()
        requires_grad = self.branch_3x3.conv.weight.requires_grad
        # On the meta device: random initialisation would only cost time.
        fused_conv = self._conv(3, bias=True, device='meta')
        fused_conv.weight = nn.Parameter(kernel, requires_grad=requires_grad)
        fused_conv.bias = nn.Parameter(bias, requires_grad=requires_grad)
        for name in self.train_modules:
            delattr(self, name)
        self.branch_reparam = fused_conv
        self.deploy = True
        return self


class QARepVGGBlock(RepVGGBlock):
    """Chu et al.'s block (AAAI 2024): ``act(se(post_norm(conv3x3_bn(x) + conv1x1(x) + x)))``.
    Unnormalised 1x1 and identity branches keep outliers out of the fused kernel (per-tensor
    INT8); ``post_norm`` precedes SE so that it folds into :class:`RepVGGBlock`'s deploy form.
    """

    train_modules = ('branch_3x3', 'branch_1x1', 'post_norm')

    def _build_train_branches(self) -> None:
        self.branch_3x3 = self._conv_norm(3)
        self.branch_1x1 = self._conv_norm(1, with_norm=False)
        self.post_norm = _build_batch_norm(self.norm_cfg, self.out_channels)

    def _branch_sum(self, x: Tensor) -> Tensor:
        out = self.branch_3x3(x) + self.branch_1x1(x)
        return self.post_norm(out + x if self.has_identity else out)

    def _fuse_train_branches(self) -> KernelBias:
        return fuse_qarepvgg_branches(
            self.branch_3x3.conv.weight, _batch_norm_stats(self.branch_3x3.norm),
            self.branch_1x1.conv.weight, self.has_identity,
            _batch_norm_stats(self.post_norm), self.groups)


def reparameterize_blocks(model: nn.Module) -> int:
    """Fuse every :class:`RepVGGBlock` of ``model`` in place and return how many; modules that
    hold blocks and have a ``deploy`` flag get ``deploy = True``."""
    num_fused = 0
    for module in model.modules():
        if isinstance(module, RepVGGBlock) and not module.deploy:
            module.switch_to_deploy()
            num_fused += 1
    for module in model.modules():
        if (hasattr(module, 'deploy') and not isinstance(module, RepVGGBlock)
                and any(isinstance(child, RepVGGBlock) for child in module.modules())):
            module.deploy = True
    return num_fused


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The fused eval-mode form of a deep copy of ``model`` (``model`` itself with ``inplace``),
    as timm's ``reparameterize_model``."""
    deploy_model = model if inplace else copy.deepcopy(model)
    reparameterize_blocks(deploy_model)
    return deploy_model.eval()
