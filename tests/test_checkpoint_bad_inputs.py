"""Every bad input to tools/reparameterize_repvgg.py gives one line, a non-zero exit and no
traceback, and leaves the user's files alone. docs/bad_inputs.md is this table, rendered
by running the cases:  .venv/bin/python tests/test_checkpoint_bad_inputs.py
"""
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from checkpoint_fixtures import (REPO_ROOT, file_fingerprint, save_train_checkpoint,
                                 trained_classifier, write_classifier_config)

from mmrepvgg.models import reparameterize_blocks

TOOL = REPO_ROOT / 'tools' / 'reparameterize_repvgg.py'
DOC = REPO_ROOT / 'docs' / 'bad_inputs.md'


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def _tensors(model, **changes):
    state_dict = dict(model.state_dict())
    state_dict.update(changes)
    return {'state_dict': state_dict}


def build_case(name, folder: Path):
    """Files for case ``name`` in ``folder``; returns (argv, expected fragment)."""
    config = write_classifier_config(folder)
    model = trained_classifier(config)
    train = save_train_checkpoint(model, folder / 'train.pth')
    dst = folder / 'deploy.pth'

    def saved(checkpoint, file_name):
        torch.save(checkpoint, folder / file_name)
        return folder / file_name

    def written(content, file_name):
        (folder / file_name).write_bytes(content)
        return folder / file_name

    src, cfg, extra = train, config, []
    if name == 'SRC does not exist':
        src = folder / 'no_such.pth'
    elif name == 'SRC is a folder':
        src = folder
    elif name == 'SRC is empty':
        src = written(b'', 'empty.pth')
    elif name == 'SRC is truncated (half a download)':
        src = written(train.read_bytes()[:train.stat().st_size // 2], 'half.pth')
    elif name == 'SRC is not a checkpoint (a text file)':
        src = written(b'epoch: 120\nacc: 72.4\n', 'notes.pth')
    elif name == 'SRC pickle would run code (os.system)':
        src = saved({'state_dict': {}, 'meta': Evil(folder / 'PWNED')}, 'evil.pth')
    elif name == 'SRC holds no state dict':
        src = saved([1, 2, 3], 'list.pth')
    elif name == 'SRC is not a RepVGG (ResNet keys)':
        src = saved({'state_dict': {'backbone.layer1.0.conv1.weight': torch.ones(1)}},
                    'resnet50.pth')
    elif name == 'SRC is another arch (B0 weights, A0 config)':
        src = save_train_checkpoint(
            trained_classifier(write_classifier_config(folder, arch='B0')), folder / 'b0.pth')
    elif name == 'SRC head size differs (100 classes, config 10)':
        src = save_train_checkpoint(
            trained_classifier(write_classifier_config(folder, num_classes=100)),
            folder / 'in100.pth')
    elif name == 'SRC has NaN weights':
        nan_var = torch.full((48, ), float('nan'))
        src = saved(_tensors(model, **{'backbone.stem.branch_3x3.norm.running_var': nan_var}),
                    'diverged.pth')
    elif name == 'SRC lacks the head (backbone only)':
        src = saved({'state_dict': {key: value for key, value in model.state_dict().items()
                                    if key.startswith('backbone.')}}, 'backbone_only.pth')
    elif name == 'SRC mixes train and deploy blocks':
        mixed = trained_classifier(config)
        reparameterize_blocks(mixed.backbone.stage_4)
        src = saved({'state_dict': mixed.state_dict()}, 'mixed.pth')
    elif name == '--src-format does not match SRC':
        extra = ['--src-format', 'official']
    elif name == 'CONFIG does not exist':
        cfg = folder / 'no_such_config.py'
    elif name == 'CONFIG is not a RepVGG config (ResNet)':
        cfg = folder / 'resnet.py'
        cfg.write_text("model = dict(type='ImageClassifier', backbone=dict(type='ResNet', "
                       "depth=18), neck=dict(type='GlobalAveragePooling'), head=dict("
                       "type='LinearClsHead', num_classes=10, in_channels=512))\n")
    elif name == 'CONFIG has a syntax error':
        cfg = folder / 'broken.py'
        cfg.write_text("model = dict(type='ImageClassifier'\n")
    elif name == 'DST exists (no --force)':
        dst.write_bytes(b'earlier deploy checkpoint')
    elif name == 'DST is SRC (with --force)':
        dst, extra = train, ['--force']
    elif name == 'DST folder cannot be created (a file is in the way)':
        dst = written(b'', 'a_file') / 'deploy.pth'
    else:
        raise KeyError(name)
    return [str(cfg), str(src), str(dst)] + extra


# (case, what the printed line must say)
BAD_INPUTS = [
    ('SRC does not exist', 'no such checkpoint file; check the path'),
    ('SRC is a folder', 'is a folder, not a checkpoint file'),
    ('SRC is empty', 'is empty (0 bytes)'),
    ('SRC is truncated (half a download)', 'truncated or corrupt checkpoint'),
    ('SRC is not a checkpoint (a text file)', 'not a PyTorch checkpoint'),
    ('SRC pickle would run code (os.system)', 'refused, it calls posix.system'),
    ('SRC holds no state dict', 'not a state dict'),
    ('SRC is not a RepVGG (ResNet keys)', 'holds no RepVGG block weights'),
    ('SRC is another arch (B0 weights, A0 config)',
     'holds RepVGG-B0 weights but the config builds RepVGG-A0'),
    ('SRC head size differs (100 classes, config 10)', 'model.head.num_classes=100'),
    ('SRC has NaN weights', 'holds NaN or infinite values'),
    ('SRC lacks the head (backbone only)', 'lacks 2 tensors the model needs'),
    ('SRC mixes train and deploy blocks', 'mixes train-form'),
    ('--src-format does not match SRC', 'holds no RepVGG block weights in the official'),
    ('CONFIG does not exist', 'no such config file'),
    ('CONFIG is not a RepVGG config (ResNet)', 'not a RepVGG config'),
    ('CONFIG has a syntax error', 'cannot read the config'),
    ('DST exists (no --force)', 'exists; pass --force'),
    ('DST is SRC (with --force)', 'is the source checkpoint'),
    ('DST folder cannot be created (a file is in the way)', 'cannot write'),
]


def load_tool():
    sys.path.insert(0, str(TOOL.parent))
    try:
        import reparameterize_repvgg
    finally:
        sys.path.remove(str(TOOL.parent))
    return reparameterize_repvgg


def run_case(name, folder: Path):
    """(exit code, stdout, stderr) of the tool on case ``name``, paths shown as <dir>."""
    argv = build_case(name, folder)
    fingerprints = {path: file_fingerprint(path) for path in map(Path, argv[1:3])
                    if path.is_file()}
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        exit_code = load_tool().main(argv)
    out, err = out.getvalue(), err.getvalue()
    for path, fingerprint in fingerprints.items():
        assert file_fingerprint(path) == fingerprint, f'{path} was modified'
    return exit_code, out.replace(str(folder), '<dir>'), err.replace(str(folder), '<dir>')


@pytest.mark.parametrize('name, expected', BAD_INPUTS, ids=[name for name, _ in BAD_INPUTS])
def test_bad_input_gives_one_line_error_and_nonzero_exit(name, expected, tmp_path):
    exit_code, out, err = run_case(name, tmp_path)
    assert exit_code == 1
    assert out == ''
    assert err.count('\n') == 1 and err.startswith('error: '), err
    assert expected in err
    assert not (tmp_path / 'PWNED').exists()


def test_deploy_checkpoint_as_src_converts_as_a_no_op_with_a_notice(tmp_path, capsys):
    config = write_classifier_config(tmp_path)
    deployed = trained_classifier(config)
    reparameterize_blocks(deployed)
    src = save_train_checkpoint(deployed, tmp_path / 'already_deploy.pth')
    exit_code = load_tool().main([str(config), str(src), str(tmp_path / 'deploy.pth')])
    out = capsys.readouterr().out
    assert exit_code == 0
    assert 'notice: ' in out and 'already in deploy form' in out
    reloaded = torch.load(tmp_path / 'deploy.pth', weights_only=True)['state_dict']
    for key, value in deployed.state_dict().items():
        torch.testing.assert_close(reloaded[key], value)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['SRC is truncated (half a download)',
                                  'CONFIG is not a RepVGG config (ResNet)'])
def test_tool_process_prints_no_traceback(name, tmp_path):
    argv = build_case(name, tmp_path)
    result = subprocess.run([sys.executable, str(TOOL)] + argv, capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: ')


def render_table(rows):
    lines = ['# Bad inputs to `tools/reparameterize_repvgg.py` and what the user sees', '',
             'Generated by running each case: `.venv/bin/python '
             'tests/test_checkpoint_bad_inputs.py`',
             '(`tests/test_checkpoint_bad_inputs.py` checks this file is current). Every case',
             'exits with status 1, prints one line on stderr and no traceback, and leaves '
             'SRC and',
             'an existing DST unchanged. `<dir>` stands for the folder of the files.', '',
             '| Bad input | Exit | What the user sees |', '|---|---|---|']
    for name, exit_code, line in rows:
        lines.append(f'| {name} | {exit_code} | `{line}` |')
    return '\n'.join(lines) + '\n'


def generated_rows(folder_factory):
    rows = []
    for name, _ in BAD_INPUTS:
        exit_code, _, err = run_case(name, folder_factory())
        rows.append((name, exit_code, err.strip().replace('|', '\\|')))
    return rows


def test_docs_table_lists_every_bad_input_with_the_line_users_see(tmp_path_factory):
    rows = generated_rows(lambda: tmp_path_factory.mktemp('case'))
    assert DOC.read_text() == render_table(rows), (
        'docs/bad_inputs.md is stale; regenerate: .venv/bin/python '
        'tests/test_checkpoint_bad_inputs.py')


if __name__ == '__main__':
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        folders = (Path(root) / f'case{index}' for index in range(len(BAD_INPUTS)))

        def new_folder():
            folder = next(folders)
            folder.mkdir()
            return folder

        table = render_table(generated_rows(new_folder))
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(table)
    print(f'wrote {DOC}')
