"""Published figures of the RepVGG variants (OpenMMLab model zoo and the paper).

Params in millions and FLOPs in G multiply-adds (as OpenMMLab counts them) at 224x224 with
the 1000-class linear head; top-1/top-5 in % on ImageNet-1k val.
"""
from typing import Dict, NamedTuple


class PublishedFigures(NamedTuple):
    epochs: int
    params_train: float
    params_deploy: float
    flops_train: float
    flops_deploy: float
    top1: float
    top5: float


PUBLISHED: Dict[str, PublishedFigures] = {
    'A0':   PublishedFigures(120,   9.11,   8.31,  1.52,  1.36, 72.41, 90.50),
    'A1':   PublishedFigures(120,  14.09,  12.79,  2.64,  2.37, 74.47, 91.85),
    'A2':   PublishedFigures(120,  28.21,  25.5,   5.7,   5.12, 76.48, 93.01),
    'B0':   PublishedFigures(120,  15.82,  14.34,  3.42,  3.06, 75.14, 92.42),
    'B1':   PublishedFigures(120,  57.42,  51.83, 13.16, 11.82, 78.37, 94.11),
    'B1g2': PublishedFigures(120,  45.78,  41.36,  9.82,  8.82, 77.79, 93.88),
    'B1g4': PublishedFigures(120,  39.97,  36.13,  8.15,  7.32, 77.58, 93.84),
    'B2':   PublishedFigures(120,  89.02,  80.32, 20.46, 18.39, 78.78, 94.42),
    'B2g4': PublishedFigures(200,  61.76,  55.78, 12.63, 11.34, 79.38, 94.68),
    'B3':   PublishedFigures(200, 123.09, 110.96, 29.17, 26.22, 80.52, 95.26),
    'B3g4': PublishedFigures(200,  83.83,  75.63, 17.9,  16.08, 80.22, 95.10),
    'D2se': PublishedFigures(200, 133.33, 120.39, 36.56, 32.85, 81.81, 95.94),
}
