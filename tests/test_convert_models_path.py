"""The seed README's path tools/convert_models/reparameterize_repvgg.py is the same tool
as tools/reparameterize_repvgg.py (both run in process, as ``python PATH ARGS`` runs
them)."""
import os
import runpy
import sys

import pytest
import torch

from mmrepvgg.models import build_model, repvgg_classifier_cfg
from lab.synthetic import randomize_batch_norms_

from conftest import REPO_ROOT

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs', 'digits', 'repvgg-A0_digits.py')
TOOL = 'reparameterize_repvgg.py'


def run(tool_path: str, *args: str, monkeypatch, capsys) -> tuple:
    """``python tool_path args``: (exit code, stdout, stderr)."""
    path = os.path.join(REPO_ROOT, tool_path)
    monkeypatch.setattr(sys, 'argv', [path, *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(path, run_name='__main__')
    output = capsys.readouterr()
    return exit_info.value.code, output.out, output.err


@pytest.fixture
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_convert_models_path_converts_like_the_tool(in_tmp_path, monkeypatch, capsys):
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0', num_classes=10)))
    torch.save({'state_dict': model.state_dict()}, in_tmp_path / 'train.pth')
    forwarded = run(f'tools/convert_models/{TOOL}', DIGITS_CONFIG, 'train.pth', 'a.pth',
                    monkeypatch=monkeypatch, capsys=capsys)
    direct = run(f'tools/{TOOL}', DIGITS_CONFIG, 'train.pth', 'b.pth',
                 monkeypatch=monkeypatch, capsys=capsys)
    assert forwarded[0] == direct[0] == 0, forwarded[2]
    assert forwarded[1].replace('a.pth', 'X') == direct[1].replace('b.pth', 'X')
    assert 'fused 22 blocks' in forwarded[1]
    deploy_a = torch.load(in_tmp_path / 'a.pth')['state_dict']
    deploy_b = torch.load(in_tmp_path / 'b.pth')['state_dict']
    assert deploy_a.keys() == deploy_b.keys()
    assert all(torch.equal(deploy_a[key], deploy_b[key]) for key in deploy_a)


def test_convert_models_path_fails_like_the_tool(in_tmp_path, monkeypatch, capsys):
    forwarded = run(f'tools/convert_models/{TOOL}', DIGITS_CONFIG, 'missing.pth', 'a.pth',
                    monkeypatch=monkeypatch, capsys=capsys)
    direct = run(f'tools/{TOOL}', DIGITS_CONFIG, 'missing.pth', 'a.pth',
                 monkeypatch=monkeypatch, capsys=capsys)
    assert forwarded == direct
    assert forwarded[0] == 1
    assert forwarded[2].startswith('error: ') and forwarded[2].count('\n') == 1
    assert not (in_tmp_path / 'a.pth').exists()
