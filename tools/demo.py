"""Build RepVGG-A0, convert it to deploy form and compare both forms on random input."""
import time

import torch

import mmrepvgg
from mmrepvgg.models import RepVGG


def main():
    torch.manual_seed(0)
    train_model = RepVGG('A0').eval()
    start = time.perf_counter()
    deploy_model = mmrepvgg.repvgg_convert(train_model)
    seconds = time.perf_counter() - start
    images = torch.randn(4, 3, 224, 224)
    with torch.inference_mode():
        train_out, = train_model(images)
        deploy_out, = deploy_model(images)
    relative_error = ((train_out - deploy_out).abs().max() / train_out.abs().max()).item()
    print(f'RepVGG-A0 converted in {seconds:.3f} s; '
          f'max |train - deploy| / max |train| = {relative_error:.2e}')


if __name__ == '__main__':
    main()
