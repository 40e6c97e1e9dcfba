"""The seed README's path tools/convert_models/reparameterize_repvgg.py is the same tool
as tools/reparameterize_repvgg.py."""
import os
import subprocess
import sys

import torch

from mmrepvgg.models import build_model, repvgg_classifier_cfg
from mmrepvgg.synthetic import randomize_batch_norms_

from conftest import REPO_ROOT

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs', 'digits', 'repvgg-A0_digits.py')
TOOL = 'reparameterize_repvgg.py'


def run(tool_path: str, *args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, tool_path), *args],
                          env=env, cwd=cwd, capture_output=True, text=True)


def test_convert_models_path_converts_like_the_tool(tool_env, tmp_path):
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0', num_classes=10)))
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'train.pth')
    forwarded = run(f'tools/convert_models/{TOOL}', DIGITS_CONFIG, 'train.pth', 'a.pth',
                    env=tool_env, cwd=tmp_path)
    assert forwarded.returncode == 0, forwarded.stderr[-2000:]
    direct = run(f'tools/{TOOL}', DIGITS_CONFIG, 'train.pth', 'b.pth', env=tool_env,
                 cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr[-2000:]
    assert forwarded.stdout.replace('a.pth', 'X') == direct.stdout.replace('b.pth', 'X')
    assert 'fused 22 blocks' in forwarded.stdout
    deploy_a = torch.load(tmp_path / 'a.pth')['state_dict']
    deploy_b = torch.load(tmp_path / 'b.pth')['state_dict']
    assert deploy_a.keys() == deploy_b.keys()
    assert all(torch.equal(deploy_a[key], deploy_b[key]) for key in deploy_a)


def test_convert_models_path_fails_like_the_tool(tool_env, tmp_path):
    forwarded = run(f'tools/convert_models/{TOOL}', DIGITS_CONFIG, 'missing.pth', 'a.pth',
                    env=tool_env, cwd=tmp_path)
    direct = run(f'tools/{TOOL}', DIGITS_CONFIG, 'missing.pth', 'a.pth', env=tool_env,
                 cwd=tmp_path)
    assert forwarded.returncode == direct.returncode == 1
    assert forwarded.stderr == direct.stderr
    assert forwarded.stderr.startswith('error: ') and forwarded.stderr.count('\n') == 1
    assert not (tmp_path / 'a.pth').exists()
