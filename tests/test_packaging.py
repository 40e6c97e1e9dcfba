"""pip and mim: the sdist holds what setup.py needs, the wheel built from it carries the
metafile, configs and tools under mmrepvgg/.mim (as mmpretrain ships them) and nothing
git does not track, and the wheel installed into a clean venv with the dependencies it
declares (resolved by pip) finds its model zoo and runs its tools outside the checkout.
Optional dependencies fail with one line naming the pip extra."""
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser

import pytest
import torch
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from mmrepvgg._compat import require_nncf
from mmrepvgg.datasets import prepare_digits
from mmrepvgg._utils import MissingExtraError, require

from conftest import REPO_ROOT

SOURCE_ITEMS = ('setup.py', 'setup.cfg', 'MANIFEST.in', 'README.md', 'LICENSE',
                'model-index.yml', 'requirements', 'configs', 'tools', 'mmrepvgg',
                'benchmarks')
MIM = 'mmrepvgg/.mim/'


def read_requirements(name: str) -> list:
    with open(os.path.join(REPO_ROOT, 'requirements', name)) as stream:
        return [line.strip() for line in stream if line.strip() and not line.startswith('#')]


# What a user may keep in a checkout without git tracking it: none of it is shipped.
UNTRACKED = ('configs/my_project/repvgg-A0_mine.py', 'configs/__pycache__/x.cpython-311.pyc',
             'tools/__pycache__/train.cpython-311.pyc')


def git(*args, cwd):
    return subprocess.run(['git', *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """(sdist path, wheel path, files git tracks in the source) from a copy of the
    checkout made a git repository, with :data:`UNTRACKED` files added: sdist first, then
    the wheel from the sdist, as pip installs a release."""
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
    git('init', '-q', cwd=source)
    git('add', '-A', cwd=source)
    git('-c', 'user.name=test', '-c', 'user.email=test@example.invalid', 'commit', '-q',
        '-m', 'source', cwd=source)
    tracked = set(git('ls-files', cwd=source).splitlines())
    for path in UNTRACKED:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text('# not tracked\n')
    subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(root / 'dist')],
                   cwd=source, check=True, capture_output=True)
    sdist, = glob.glob(str(root / 'dist' / '*.tar.gz'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    '--no-build-isolation', sdist, '-w', str(root / 'wheels')],
                   cwd=root, check=True, capture_output=True)
    wheel, = glob.glob(str(root / 'wheels' / '*.whl'))
    return sdist, wheel, tracked


def test_sdist_holds_what_setup_py_and_the_wheel_need(built):
    sdist, _, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split('/', 1)[1] for name in archive.getnames() if '/' in name}
    assert {'setup.py', 'LICENSE', 'model-index.yml', 'requirements/install.txt',
            'requirements/tests.txt', 'configs/metafile.yml',
            'configs/repvgg-A0_4xb64-coslr-120e_in1k.py', 'tools/train.py'} <= names


def test_wheel_ships_the_tracked_metafile_configs_and_tools_under_mim_and_nothing_else(
        built):
    sdist, wheel, tracked = built
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {name[len(MIM):] for name in names if name.startswith(MIM)}
    assert shipped == {path for path in tracked
                       if path.startswith(('configs/', 'tools/')) or path == 'model-index.yml'}
    assert 'configs/metafile.yml' in shipped and 'tools/train.py' in shipped
    assert 'mmrepvgg/model_zoo.py' in names
    # The lab (benchmarks/: its instruments, its library `lab`, its tests) is tracked but
    # never shipped.
    assert any(path.startswith('benchmarks/lab/') for path in tracked)
    assert not [name for name in names if 'benchmarks/' in name or name.startswith('lab/')]
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split('/', 1)[1] for name in archive.getnames() if '/' in name}
    assert not in_sdist & set(UNTRACKED)


def wheel_metadata(wheel):
    archive = zipfile.ZipFile(wheel)
    metadata_name, = [name for name in archive.namelist() if name.endswith('/METADATA')]
    return Parser().parsestr(archive.read(metadata_name).decode())


def requirements_of(metadata, extra=None) -> set:
    """The Requires-Dist entries of the base install (``extra`` None) or of one extra."""
    requirements = {Requirement(req) for req in metadata.get_all('Requires-Dist')}
    if extra is None:
        return {req for req in requirements if not req.marker}
    return {req for req in requirements if req.marker and req.marker.evaluate({'extra': extra})}


def test_wheel_metadata_has_ranges_python_3_10_and_the_extras(built):
    _, wheel, _ = built
    metadata = wheel_metadata(wheel)
    assert metadata['Requires-Python'] == '>=3.10'
    base = requirements_of(metadata)
    assert base == {Requirement(req) for req in read_requirements('install.txt')}
    assert not any(spec.operator == '==' for req in base for spec in req.specifier)
    assert {'onnx', 'demo', 'plot', 'openvino', 'torch-int8', 'photos', 'seg', 'det', 'all',
            'lite', 'mim'} <= set(metadata.get_all('Provides-Extra'))
    assert {req.name for req in requirements_of(metadata, 'all')} == {
        'onnx', 'onnxruntime', 'scikit-learn', 'matplotlib', 'openvino', 'nncf', 'torchao',
        'scikit-image', 'mmsegmentation', 'ftfy', 'regex', 'mmdet'}
    assert {(req.name, req.specifier) for req in requirements_of(metadata, 'mim')} == {
        (req.name, req.specifier) for req in map(Requirement, read_requirements('mminstall.txt'))}
    assert any(name.endswith('LICENSE') for name in zipfile.ZipFile(wheel).namelist())


def test_only_the_lite_and_mim_extras_name_an_mmcv(built):
    """A full mmcv (compiled for one torch and CUDA) stays: neither `pip install mmrepvgg`
    nor an extra other than lite may pull mmcv-lite's files over it, nor another mmcv."""
    _, wheel, _ = built
    metadata = wheel_metadata(wheel)
    mmcv_names = {'mmcv', 'mmcv-lite', 'mmcv-full'}
    for extra in [None, *metadata.get_all('Provides-Extra')]:
        names = {req.name for req in requirements_of(metadata, extra)} & mmcv_names
        assert names == {'lite': {'mmcv-lite'}, 'mim': {'mmcv'}}.get(extra, set()), extra


def test_wheel_metadata_admits_the_lower_bound_environment_and_starts_there(built):
    """requirements/lowerbound.txt (what CI's Python 3.10 environment installs) satisfies
    every requirement it pins, mmcv-lite standing in for mmcv; each declared lower bound is
    the release series CI tries there, so nothing older is admitted untried."""
    _, wheel, _ = built
    metadata = wheel_metadata(wheel)
    assert SpecifierSet(metadata['Requires-Python']).contains('3.10.0')
    pins = {}
    for line in read_requirements('lowerbound.txt'):
        pin = Requirement(line)
        spec, = pin.specifier
        assert spec.operator == '==', line
        pins[pin.name] = Version(spec.version)
    pins.setdefault('mmcv', pins['mmcv-lite'])
    checked = set()
    for extra in (None, 'lite', 'mim', 'onnx', 'seg', 'det'):
        for req in requirements_of(metadata, extra):
            if req.name in pins:
                assert req.specifier.contains(pins[req.name]), (req, pins[req.name])
                checked.add(req.name)
    assert {'torch', 'torchvision', 'numpy', 'mmengine', 'mmpretrain', 'mmcv', 'mmcv-lite',
            'onnx', 'onnxruntime', 'mmsegmentation', 'mmdet'} <= checked
    for req in requirements_of(metadata):
        for spec in req.specifier:
            if spec.operator == '>=':
                lowest = Version(spec.version).release
                assert pins[req.name].release[:len(lowest)] == lowest, (req, pins[req.name])


@pytest.mark.slow  # a clean venv with torch: a few minutes, mostly copying wheels
def test_wheel_installed_with_its_declared_dependencies_runs_outside_the_checkout(
        built, tmp_path, tool_env):
    """pip resolves what the wheel declares (nothing is installed by hand but the pinned
    torch pair, which pip would otherwise pick itself): an undeclared module-level import
    fails here."""
    _, wheel, _ = built
    # Nothing of this interpreter's path may leak in: a PYTHONPATH holding the checkout
    # would let pip take mmrepvgg as installed and the imports below find it there.
    env = {key: value for key, value in tool_env.items() if key != 'PYTHONPATH'}
    venv = tmp_path / 'venv'
    try:
        subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, env=env)
        python = str(venv / 'bin' / 'python')
        pinned = [line for line in read_requirements('runtime.txt')
                  if line.startswith(('torch==', 'torchvision=='))]
        # mmcv-lite through the lite extra: a clean venv has no full mmcv.
        for requirements in (pinned, [f'{wheel}[lite]']):
            installed = subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-compile',
                                        *requirements],
                                       cwd=tmp_path, env=env, capture_output=True, text=True)
            assert installed.returncode == 0, installed.stderr[-3000:]
        check = subprocess.run(
            [python, '-c',
             'import mmrepvgg, mmpretrain\n'
             'from mmrepvgg.model_zoo import resource_root\n'
             'print(mmrepvgg.__file__)\nprint(resource_root())\n'
             'print(len(mmpretrain.list_models("repvgg*_3rdparty_4xb64*")))\n'
             'print(mmpretrain.get_model("repvgg-a0_3rdparty_4xb64-coslr-120e_in1k")'
             '.backbone.__class__.__module__)'],
            cwd=tmp_path, env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr[-2000:]
        package_file, root, count, backbone_module = check.stdout.split()[-4:]
        assert package_file.startswith(str(venv))
        assert root == os.path.join(os.path.dirname(package_file), '.mim')
        assert int(count) == 24
        assert backbone_module == 'mmrepvgg.models.repvgg'
        # What `mim train mmrepvgg CONFIG` runs: the shipped tools with a shipped config.
        a0_config = os.path.join(root, 'configs', 'repvgg-A0_4xb64-coslr-120e_in1k.py')
        flops = subprocess.run([python, os.path.join(root, 'tools', 'analysis_tools',
                                                     'get_flops.py'), a0_config],
                               cwd=tmp_path, env=env, capture_output=True, text=True)
        assert flops.returncode == 0, flops.stderr[-2000:]
        assert 'Params: 9.11 M' in flops.stdout
    finally:  # torch and its libraries take gigabytes: never keep them in pytest's temp
        shutil.rmtree(venv, ignore_errors=True)


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(MissingExtraError,
                       match=r'^no_such_module is not installed .*pip install '
                       r'"mmrepvgg\[demo\]"$'):
        require('no_such_module', 'demo')


def test_int8_with_openvino_on_a_torch_without_uint16_names_the_torch_it_needs(monkeypatch):
    monkeypatch.delattr(torch, 'uint16', raising=False)  # as in torch 2.1
    with pytest.raises(MissingExtraError, match=r'^INT8 with OpenVINO needs torch >= 2\.3: '
                       r'nncf imports torch\.uint16, .*quantize with ONNX Runtime$') as error:
        require_nncf()
    assert '\n' not in str(error.value)


def test_digits_without_scikit_learn_says_to_install_the_demo_extra(tmp_path, monkeypatch):
    # None in sys.modules makes an import fail, as if scikit-learn were not installed.
    for name in [name for name in sys.modules if name.split('.')[0] == 'sklearn'] + \
            ['sklearn']:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r'pip install "mmrepvgg\[demo\]"$'):
        prepare_digits(str(tmp_path / 'digits'))
    assert not (tmp_path / 'digits').exists()
