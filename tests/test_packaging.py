"""pip and mim: the sdist holds what setup.py needs, the wheel built from it carries the
metafile, configs and tools under mmrepvgg/.mim (as mmpretrain ships them), and the
installed package finds its model zoo and runs its tools outside the checkout. Optional
dependencies fail with one line naming the pip extra."""
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser

import pytest
from packaging.requirements import Requirement

from mmrepvgg.utils import MissingExtraError, require

from conftest import REPO_ROOT

SOURCE_ITEMS = ('setup.py', 'setup.cfg', 'MANIFEST.in', 'README.md', 'LICENSE',
                'model-index.yml', 'requirements', 'configs', 'tools', 'mmrepvgg')
MIM = 'mmrepvgg/.mim/'


def read_requirements(name: str) -> list:
    with open(os.path.join(REPO_ROOT, 'requirements', name)) as stream:
        return [line.strip() for line in stream if line.strip() and not line.startswith('#')]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """(sdist path, wheel path, folder the wheel is installed in) from a copy of the
    checkout: sdist first, then the wheel from the sdist, as pip installs a release."""
    root = tmp_path_factory.mktemp('packaging')
    source = root / 'source'
    source.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim')
    for item in SOURCE_ITEMS:
        path = os.path.join(REPO_ROOT, item)
        if os.path.isdir(path):
            shutil.copytree(path, source / item, ignore=ignore)
        else:
            shutil.copy2(path, source / item)
    subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(root / 'dist')],
                   cwd=source, check=True, capture_output=True)
    sdist, = glob.glob(str(root / 'dist' / '*.tar.gz'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    '--no-build-isolation', sdist, '-w', str(root / 'wheels')],
                   cwd=root, check=True, capture_output=True)
    wheel, = glob.glob(str(root / 'wheels' / '*.whl'))
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                    '--no-compile', '--target', str(root / 'site'), wheel],
                   cwd=root, check=True, capture_output=True)
    return sdist, wheel, str(root / 'site')


def test_sdist_holds_what_setup_py_and_the_wheel_need(built):
    sdist, _, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split('/', 1)[1] for name in archive.getnames() if '/' in name}
    assert {'setup.py', 'LICENSE', 'model-index.yml', 'requirements/install.txt',
            'requirements/tests.txt', 'configs/metafile.yml',
            'configs/repvgg-A0_4xb64-coslr-120e_in1k.py', 'tools/train.py'} <= names


def test_wheel_ships_metafile_configs_and_tools_under_mim(built):
    _, wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    config_files = {os.path.relpath(path, REPO_ROOT) for path in
                    glob.glob(os.path.join(REPO_ROOT, 'configs', '**', '*.*'), recursive=True)}
    tool_files = {os.path.relpath(path, REPO_ROOT) for path in
                  glob.glob(os.path.join(REPO_ROOT, 'tools', '**', '*.py'), recursive=True)}
    assert {MIM + path for path in config_files | tool_files} <= names
    assert MIM + 'model-index.yml' in names
    assert 'mmrepvgg/model_zoo.py' in names


def test_wheel_metadata_has_ranges_python_3_10_and_the_extras(built):
    _, wheel, _ = built
    archive = zipfile.ZipFile(wheel)
    metadata_name, = [name for name in archive.namelist() if name.endswith('/METADATA')]
    metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata['Requires-Python'] == '>=3.10'
    requires = metadata.get_all('Requires-Dist')
    base = {Requirement(req) for req in requires if 'extra ==' not in req}
    assert base == {Requirement(req) for req in read_requirements('install.txt')}
    assert not any(spec.operator == '==' for req in base for spec in req.specifier)
    assert {'onnx', 'demo', 'openvino', 'photos', 'all'} <= set(
        metadata.get_all('Provides-Extra'))
    extra_all = {req.split(';')[0].strip() for req in requires if "extra == 'all'" in
                 req.replace('"', "'")}
    assert extra_all == {'onnx', 'onnxruntime', 'scikit-learn', 'openvino', 'nncf',
                         'scikit-image', 'matplotlib'}
    assert any(name.endswith('LICENSE') for name in archive.namelist())


def test_installed_package_reads_its_zoo_and_runs_tools_outside_the_checkout(
        built, tmp_path, tool_env):
    _, _, site = built
    env = {**tool_env, 'PYTHONPATH': site}
    mim_root = os.path.join(site, 'mmrepvgg', '.mim')
    check = subprocess.run(
        [sys.executable, '-c',
         'import mmrepvgg, mmpretrain\n'
         'from mmrepvgg.model_zoo import resource_root, zoo_models\n'
         'print(mmrepvgg.__file__)\nprint(resource_root())\n'
         'print(len(mmpretrain.list_models("repvgg*_3rdparty_4xb64*")))\n'
         'print(mmpretrain.get_model("repvgg-a0_3rdparty_4xb64-coslr-120e_in1k")'
         '.backbone.__class__.__module__)'],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]
    package_file, root, count, backbone_module = check.stdout.split()[-4:]
    assert package_file.startswith(site)
    assert root == mim_root
    assert int(count) == 24
    assert backbone_module == 'mmrepvgg.models.repvgg'
    # What `mim train mmrepvgg CONFIG` runs: the shipped tools/train.py with a shipped config.
    table = subprocess.run([sys.executable, os.path.join(mim_root, 'tools',
                                                         'model_zoo_table.py')],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr[-2000:]
    assert table.stdout.count('| `repvgg-') == 12
    train_help = subprocess.run([sys.executable, os.path.join(mim_root, 'tools', 'train.py'),
                                 '--help'], cwd=tmp_path, env=env, capture_output=True,
                                text=True)
    assert train_help.returncode == 0 and 'config' in train_help.stdout


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(MissingExtraError,
                       match=r'^no_such_module is not installed .*pip install '
                       r'"mmrepvgg\[demo\]"$'):
        require('no_such_module', 'demo')


def test_digits_without_scikit_learn_says_to_install_the_demo_extra(tmp_path):
    script = ('import sys\nsys.modules["sklearn"] = None\n'
              'from mmrepvgg.datasets import prepare_digits\n'
              'prepare_digits("digits")\n')
    run = subprocess.run([sys.executable, '-c', script], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert 'pip install "mmrepvgg[demo]"' in run.stderr.splitlines()[-1]
    assert not (tmp_path / 'digits').exists()
