"""The spatial pyramid pooling of YOLOX-PAI's RepVGG backbone (``RepVGG(add_ppf=True)``)."""
import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor, nn


class MTSPPF(BaseModule):
    """1x1 conv to half the channels, three max-pools in a row, concatenation of the four maps,
    1x1 conv: ``(N, in_channels, H, W) -> (N, out_channels, H, W)``, as mmpretrain's."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 kernel_size: int = 5):
        super().__init__()
        hidden_channels = in_channels // 2
        self.conv1 = ConvModule(in_channels, hidden_channels, 1, norm_cfg=norm_cfg,
                                act_cfg=act_cfg)
        self.conv2 = ConvModule(4 * hidden_channels, out_channels, 1, norm_cfg=norm_cfg,
                                act_cfg=act_cfg)
        self.maxpool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        pyramid = [self.conv1(x)]
        for _ in range(3):
            pyramid.append(self.maxpool(pyramid[-1]))
        return self.conv2(torch.cat(pyramid, dim=1))
