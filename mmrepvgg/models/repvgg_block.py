"""The RepVGG and QARepVGG blocks: three branches while training, one 3x3 conv once
deployed."""
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
    """The eval-mode tensors of a (Sync)BatchNorm module, not detached: a fusion computed
    from them is differentiable in ``weight`` and ``bias``."""
    if norm.running_mean is None:
        raise ValueError(f'{type(norm).__name__} has no running statistics '
                         '(track_running_stats=False) and cannot be fused')
    return BatchNormStats(norm.running_mean, norm.running_var, norm.weight, norm.bias,
                          norm.eps)


def _build_batch_norm(norm_cfg: dict, channels: int) -> _BatchNorm:
    """The norm layer of ``norm_cfg``, refused unless it is a BatchNorm (BN, SyncBN, ...).

    Only a BatchNorm is an affine map per channel in eval mode, which is what folds into
    the fused conv; GroupNorm or LayerNorm normalise over a whole sample, so a block with
    them has no equivalent plain conv. Refusing here, as mmpretrain's RepVGG does, stops
    the model at build rather than at conversion after training.
    """
    norm = build_norm_layer(norm_cfg, channels)[1]
    if not isinstance(norm, _BatchNorm):
        raise TypeError(f'RepVGG blocks need a BatchNorm norm_cfg (BN, SyncBN), got '
                        f'{norm_cfg.get("type")!r} ({type(norm).__name__}), which cannot '
                        'be fused into a conv; use norm_cfg=dict(type=\'BN\')')
    return norm


class RepVGGBlock(BaseModule):
    """``act(se(conv3x3_bn(x) + conv1x1_bn(x) + bn(x)))``, or ``act(se(conv3x3(x)))``.

    The identity branch exists only where ``in_channels == out_channels`` and
    ``stride == 1``. Module names follow mmpretrain's checkpoints: ``branch_3x3.conv``,
    ``branch_3x3.norm``, ``branch_1x1.{conv,norm}``, ``branch_norm``, ``branch_reparam``,
    ``se_layer``. The constructor takes mmpretrain's ``RepVGGBlock`` arguments.

    Args:
        in_channels (int): input channels ``C_in``.
        out_channels (int): output channels ``C_out``.
        stride (int): stride of both convolutions. Defaults to 1.
        padding (int, optional): padding of the 3x3 convolution; must equal ``dilation``
            (only then do the 1x1 and identity branches read the pixel of the 3x3 centre
            tap). ``None`` means ``dilation``. Defaults to None.
        dilation (int): dilation of the 3x3 convolution. Defaults to 1.
        groups (int): groups of both convolutions. Defaults to 1.
        padding_mode (str): padding mode of the 3x3 convolution (the centre tap never
            reads padding, so any mode fuses exactly). Defaults to ``'zeros'``.
        se_cfg (dict, optional): arguments of the squeeze-excitation layer applied to the
            summed branches, before the activation; ``None`` for none. Defaults to None.
        with_cp (bool): recompute the branches in backward (activation checkpointing) to
            save memory. Defaults to False.
        conv_cfg (dict, optional): the convolution layers, for ``build_conv_layer``; they
            must compute a plain convolution for the fusion to hold. Defaults to None
            (``nn.Conv2d``).
        norm_cfg (dict): the norm layers. Defaults to ``dict(type='BN')``.
        act_cfg (dict): the activation. Defaults to ``dict(type='ReLU')``.
        deploy (bool): build the fused single-conv form. Defaults to False.
        init_cfg (dict, optional): mmengine initialisation config. Defaults to None.

    Shape:
        ``(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride))``.
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
        if se_cfg is not None and not isinstance(se_cfg, dict):
            raise TypeError(f'se_cfg must be a dict or None, got {type(se_cfg).__name__}')
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
        """Whether the train form adds its input: same width and stride 1."""
        return self.in_channels == self.out_channels and self.stride == 1

    def _build_train_branches(self) -> None:
        self.branch_3x3 = self._conv_norm(3)
        self.branch_1x1 = self._conv_norm(1)
        self.branch_norm = (_build_batch_norm(self.norm_cfg, self.in_channels)
                            if self.has_identity else None)

    def _conv(self, kernel_size: int, bias: bool, **factory_kwargs) -> nn.Conv2d:
        if kernel_size == 3:
            padding, dilation, padding_mode = self.dilation, self.dilation, self.padding_mode
        else:
            padding, dilation, padding_mode = 0, 1, 'zeros'
        return build_conv_layer(
            self.conv_cfg, self.in_channels, self.out_channels, kernel_size,
            stride=self.stride, padding=padding, dilation=dilation, groups=self.groups,
            bias=bias, padding_mode=padding_mode, **factory_kwargs)

    def _conv_norm(self, kernel_size: int, with_norm: bool = True) -> nn.Sequential:
        layers = OrderedDict(conv=self._conv(kernel_size, bias=False))
        if with_norm:
            layers['norm'] = _build_batch_norm(self.norm_cfg, self.out_channels)
        return nn.Sequential(layers)

    def _branch_sum(self, x: Tensor) -> Tensor:
        """The train form's summed branches (before SE and activation)."""
        out = self.branch_3x3(x) + self.branch_1x1(x)
        if self.branch_norm is not None:
            out = out + self.branch_norm(x)
        return out

    def _pre_activation(self, x: Tensor) -> Tensor:
        out = self.branch_reparam(x) if self.deploy else self._branch_sum(x)
        if self.se_layer is not None:
            out = self.se_layer(out)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            out = checkpoint(self._pre_activation, x, use_reentrant=False)
        else:
            out = self._pre_activation(x)
        return self.act(out)

    def _fuse_train_branches(self) -> KernelBias:
        return fuse_repvgg_branches(
            self.branch_3x3.conv.weight, _batch_norm_stats(self.branch_3x3.norm),
            self.branch_1x1.conv.weight, _batch_norm_stats(self.branch_1x1.norm),
            None if self.branch_norm is None else _batch_norm_stats(self.branch_norm),
            self.groups)

    def get_equivalent_kernel_bias(self) -> KernelBias:
        """The deploy conv's ``(kernel (C_out, C_in // groups, 3, 3), bias (C_out,))``.

        The official repository's name and meaning: the block's eval-mode function (BN
        running statistics) as one conv, differentiable in the branch weights and the BN
        affine parameters, so that a loss on it (the official custom L2 penalty, or
        quantization-aware training) trains the branches. For a deployed block, its conv's
        own parameters.
        """
        if self.deploy:
            return self.branch_reparam.weight, self.branch_reparam.bias
        return self._fuse_train_branches()

    @torch.no_grad()
    def switch_to_deploy(self) -> 'RepVGGBlock':
        """Replace the branches by their fused 3x3 conv, in place; a no-op if deployed.

        The fused parameters need a gradient exactly when the 3x3 branch's weight did, so
        a frozen stage stays frozen.
        """
        if self.deploy:
            return self
        kernel, bias = self.get_equivalent_kernel_bias()
        requires_grad = self.branch_3x3.conv.weight.requires_grad
        # Built on the meta device: random initialisation would only cost time, the
        # fused tensors become its parameters as they are.
        fused_conv = self._conv(3, bias=True, device='meta')
        fused_conv.weight = nn.Parameter(kernel, requires_grad=requires_grad)
        fused_conv.bias = nn.Parameter(bias, requires_grad=requires_grad)
        for name in self.train_modules:
            delattr(self, name)
        self.branch_reparam = fused_conv
        self.deploy = True
        return self


class QARepVGGBlock(RepVGGBlock):
    """The quantization-aware block of Chu et al., "Make RepVGG Greater Again: A
    Quantization-aware Approach" (AAAI 2024): ``act(se(post_norm(conv3x3_bn(x) +
    conv1x1(x) + x)))``.

    Only the 3x3 branch has a BN; the 1x1 branch and the identity (same width, stride 1)
    add unnormalised, and one BN (``post_norm``) follows the sum. The paper's reason: the
    BN-scaled 1x1 and identity branches put outliers into RepVGG's fused kernel and the
    three separately normalised branches widen the activations, both ruinous for per-tensor
    INT8. The post-sum BN comes before SE so that it folds into the fused conv: the deploy
    form (``branch_reparam``, then SE and activation) and its state dict are exactly
    :class:`RepVGGBlock`'s. Train-form keys: ``branch_3x3.{conv,norm}``,
    ``branch_1x1.conv``, ``post_norm``.

    Takes the arguments of :class:`RepVGGBlock`.
    """

    train_modules = ('branch_3x3', 'branch_1x1', 'post_norm')

    def _build_train_branches(self) -> None:
        self.branch_3x3 = self._conv_norm(3)
        self.branch_1x1 = self._conv_norm(1, with_norm=False)
        self.post_norm = _build_batch_norm(self.norm_cfg, self.out_channels)

    def _branch_sum(self, x: Tensor) -> Tensor:
        out = self.branch_3x3(x) + self.branch_1x1(x)
        if self.has_identity:
            out = out + x
        return self.post_norm(out)

    def _fuse_train_branches(self) -> KernelBias:
        return fuse_qarepvgg_branches(
            self.branch_3x3.conv.weight, _batch_norm_stats(self.branch_3x3.norm),
            self.branch_1x1.conv.weight, self.has_identity,
            _batch_norm_stats(self.post_norm), self.groups)


def reparameterize_blocks(model: nn.Module) -> int:
    """Fuse every :class:`RepVGGBlock` inside ``model`` in place.

    Works on any module tree (a backbone, a classifier, a detector). Modules with a
    ``deploy`` flag that contain blocks get ``deploy = True`` so they rebuild in deploy
    form from their config.

    Returns:
        The number of blocks that were fused (0 for an already deployed model).
    """
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
    """The deploy form of ``model`` in eval mode: a deep copy (``model`` itself with
    ``inplace``) whose train-form blocks are fused by :func:`reparameterize_blocks`; a
    deployed model comes back unchanged. The one copy-and-fuse of the package (timm's
    ``reparameterize_model`` has the same contract)."""
    deploy_model = model if inplace else copy.deepcopy(model)
    reparameterize_blocks(deploy_model)
    return deploy_model.eval()
