import torch

import mmrepvgg  # registers the 'mmrepvgg' scope and the model zoo
from mmrepvgg.apis import convert_checkpoint, get_model
from mmrepvgg.models import RepVGG

train_model = RepVGG('A0').eval()  # or any model holding RepVGG blocks
deploy_model = mmrepvgg.repvgg_convert(train_model, save_path='repvgg-A0-deploy.pth',
                                       overwrite=True)
x = torch.randn(1, 3, 224, 224)
train_out, deploy_out = train_model(x)[0], deploy_model(x)[0]
# The same function up to float32 rounding, relative to the outputs' scale (here ~10).
scale = train_out.abs().max().item()
assert torch.allclose(train_out, deploy_out, rtol=1e-4, atol=1e-4 * scale)

# A checkpoint file, as tools/reparameterize_repvgg.py converts it. get_model takes a
# model zoo name or a config; pretrained=True would download the published weights.
classifier = get_model('repvgg-A0_3rdparty_4xb64-coslr-120e_in1k')
torch.save({'state_dict': classifier.state_dict()}, 'repvgg-A0-train.pth')
report = convert_checkpoint('configs/repvgg-A0_4xb64-coslr-120e_in1k.py',
                            'repvgg-A0-train.pth', 'repvgg-A0-deploy-classifier.pth',
                            overwrite=True)
print(report.arch, report.num_fused_blocks, 'blocks fused, max relative error',
      f'{report.max_relative_error:.1e}')
