"""The RepVGG backbone, registered in the ``mmrepvgg`` scope."""
import warnings
from functools import partial
from typing import Optional, Sequence, Tuple, Union

from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import MODELS
from .arch import RepVGGArgumentError, resolve_arch, stage_widths, stem_width
from .repvgg_block import QARepVGGBlock, RepVGGBlock, reparameterize_blocks
from .sppf import MTSPPF

DEFAULT_INIT_CFG = [
    dict(type='Kaiming', layer=['Conv2d']),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm']),
]

BLOCK_TYPES = {'repvgg': RepVGGBlock, 'qarepvgg': QARepVGGBlock}


@MODELS.register_module()
class RepVGG(BaseBackbone):
    """RepVGG backbone: `RepVGG: Making VGG-style ConvNets Great Again
    <https://arxiv.org/abs/2101.03697>`_, with mmpretrain's arguments and state-dict layout
    (``stem``, ``stage_1`` .. ``stage_4``, ``ppf``). ``arch`` is a name of
    :data:`~mmrepvgg.models.arch.ARCH_SETTINGS` (or one of mmpretrain's unpublished ones) or a
    custom dict; ``frozen_stages=k`` freezes the stem and stages 1..k; ``add_ppf`` appends
    YOLOX-PAI's :class:`MTSPPF`; ``block_type`` ``'qarepvgg'`` trains QARepVGG blocks (the
    deploy forms are identical). ``(N, in_channels, H, W)`` -> one ``(N, C_i, H / 2**(i + 2),
    W / 2**(i + 2))`` per ``out_indices`` entry ``i`` (default strides).
    """

    def __init__(self,
                 arch: Union[str, dict],
                 in_channels: int = 3,
                 base_channels: int = 64,
                 out_indices: Sequence[int] = (3, ),
                 strides: Sequence[int] = (2, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 with_cp: bool = False,
                 deploy: bool = False,
                 norm_eval: bool = False,
                 add_ppf: bool = False,
                 block_type: str = 'repvgg',
                 init_cfg: Optional[list] = DEFAULT_INIT_CFG):
        super().__init__(init_cfg)
        self.arch = resolve_arch(arch)
        num_stages = len(self.arch['num_blocks'])
        if block_type not in BLOCK_TYPES:
            raise RepVGGArgumentError(f'unknown block_type {block_type!r}; choose one of '
                                      f'{", ".join(BLOCK_TYPES)}')
        if not len(strides) == len(dilations) == num_stages:
            raise RepVGGArgumentError(f'strides and dilations need {num_stages} entries, '
                                      f'got {len(strides)} and {len(dilations)}')
        for index in out_indices:
            if not -num_stages <= index < num_stages:
                raise RepVGGArgumentError(f'out_indices entry {index} is outside the '
                                          f'{num_stages} stages')
        if not -1 <= frozen_stages <= num_stages:
            raise RepVGGArgumentError(f'frozen_stages must lie in [-1, {num_stages}], '
                                      f'got {frozen_stages}')
        self.out_indices = tuple(index % num_stages for index in out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.deploy = deploy
        self.block_type = block_type

        make_block = partial(BLOCK_TYPES[block_type], se_cfg=self.arch['se_cfg'],
                             with_cp=with_cp, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                             act_cfg=act_cfg, deploy=deploy)
        group_layer_map = self.arch['group_layer_map'] or {}
        channels = stem_width(self.arch, base_channels)
        self.stem = make_block(in_channels, channels, stride=2)
        block_index = 1  # the stem is block 0 of group_layer_map
        self.stages = []  # stage module names, as mmpretrain's RepVGG has them
        for stage_index, (depth, out_channels) in enumerate(
                zip(self.arch['num_blocks'], stage_widths(self.arch, base_channels))):
            blocks = []
            for index_in_stage in range(depth):
                blocks.append(make_block(
                    channels, out_channels,
                    stride=strides[stage_index] if index_in_stage == 0 else 1,
                    dilation=dilations[stage_index],
                    groups=group_layer_map.get(block_index, 1)))
                channels = out_channels
                block_index += 1
            stage_name = f'stage_{stage_index + 1}'
            self.add_module(stage_name, nn.Sequential(*blocks))
            self.stages.append(stage_name)
        self.out_channels = channels
        self.ppf = (MTSPPF(channels, channels, norm_cfg, act_cfg) if add_ppf
                    else nn.Identity())
        self._freeze_stages()

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = self.stem(x)
        outs = []
        for stage_index, stage_name in enumerate(self.stages):
            x = getattr(self, stage_name)(x)
            if stage_index == len(self.stages) - 1:
                x = self.ppf(x)
            if stage_index in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen_names = ['stem', *self.stages[:self.frozen_stages]]
        for module in map(self.get_submodule, frozen_names):
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'RepVGG':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        if mode and self.deploy:
            warnings.warn(
                'training a RepVGG built with deploy=True: the plain form trains markedly '
                'worse than the multi-branch one; train with deploy=False and convert with '
                'tools/reparameterize_repvgg.py afterwards', stacklevel=2)
        return self

    def switch_to_deploy(self) -> 'RepVGG':
        reparameterize_blocks(self)
        return self


def image_channels(model: nn.Module) -> int:
    """The ``in_channels`` of the RepVGG backbone in ``model``; ValueError if it holds none,
    or several that disagree."""
    channels = {module.stem.in_channels for module in model.modules()
                if isinstance(module, RepVGG)}
    if len(channels) != 1:
        found = (f'its RepVGG backbones take {sorted(channels)}' if channels
                 else 'the model holds no RepVGG backbone')
        raise ValueError(f'cannot tell the image channels: {found}')
    return channels.pop()
