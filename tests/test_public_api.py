"""The public API: exactly the names of ``mmrepvgg.__all__``, each importable, documented
and listed in docs/api.md; sub-packages re-export only their public names; and importing
the package changes nothing in the process and loads no optional runtime."""
import ast
import glob
import importlib
import inspect
import os
import re
import subprocess
import sys
import types

import pytest

import mmrepvgg

from conftest import REPO_ROOT

# The names a user of mmpretrain, timm or the official repository reaches for.
PUBLIC_NAMES = {
    '__version__', 'get_model', 'list_models', 'inference_model', 'reparameterize_model',
    'repvgg_convert', 'convert_checkpoint', 'load_checkpoint', 'prepare_for_inference',
    'export_onnx', 'export_int8', 'RepVGG', 'RepVGGBlock', 'QARepVGGBlock',
    'CheckpointError', 'ConfigError'}
# Sub-package -> what it re-exports: its public names only; helpers are imported from the
# module that defines them.
SUBPACKAGE_NAMES = {
    'mmrepvgg.checkpoint': {'CheckpointError', 'FittedState', 'load_checkpoint',
                            'load_checkpoint_file', 'atomic_output', 'check_output',
                            'save_checkpoint_atomic'},
    'mmrepvgg.engine': {'run_train', 'run_test', 'load_repvgg_config', 'RepVGGRunner',
                        'ConfigError'},
    'mmrepvgg.models': {'RepVGG', 'RepVGGBlock', 'QARepVGGBlock', 'MTSPPF',
                        'reparameterize_blocks', 'reparameterize_model', 'build_model',
                        'repvgg_classifier_cfg', 'ARCH_SETTINGS', 'RepVGGArgumentError'},
}


def test_all_is_exactly_the_public_names():
    assert sorted(mmrepvgg.__all__) == sorted(PUBLIC_NAMES)
    assert len(mmrepvgg.__all__) == len(set(mmrepvgg.__all__))


@pytest.mark.parametrize('name', sorted(PUBLIC_NAMES - {'__version__'}))
def test_each_public_name_imports_and_is_documented(name):
    value = getattr(mmrepvgg, name)
    namespace = {}
    exec(f'from mmrepvgg import {name}', namespace)  # the spelling users write
    assert namespace[name] is value
    assert callable(value)
    assert len(inspect.getdoc(value) or '') > 40, f'{name} has no docstring'
    assert name in dir(mmrepvgg)


def test_version_is_a_version_string():
    assert re.fullmatch(r'\d+\.\d+\.\d+\S*', mmrepvgg.__version__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'load_fitted_state'"):
        mmrepvgg.load_fitted_state


def test_docs_api_lists_each_public_name_once_and_nothing_else():
    with open(os.path.join(REPO_ROOT, 'docs', 'api.md')) as stream:
        text = stream.read()
    listed = re.findall(r'`mmrepvgg\.(\w+)', text)
    assert sorted(set(listed)) == sorted(PUBLIC_NAMES)
    table_rows = re.findall(r'^\| `mmrepvgg\.(\w+)', text, flags=re.M)
    assert sorted(table_rows) == sorted(PUBLIC_NAMES - {'__version__'})


@pytest.mark.parametrize('package', sorted(SUBPACKAGE_NAMES))
def test_subpackage_reexports_only_its_public_names(package):
    module = importlib.import_module(package)
    exported = {name for name, value in vars(module).items()
                if not name.startswith('_') and not isinstance(value, types.ModuleType)}
    assert exported == SUBPACKAGE_NAMES[package]
    assert sorted(module.__all__) == sorted(SUBPACKAGE_NAMES[package])


PROCESS_STATE_AROUND_IMPORT = '''
import logging, sys, warnings, torch, mmengine.runner, mmpretrain.models
from mmengine.runner import CheckpointLoader

def state():
    # torch < 2.4 has no allow-list to read (get_safe_globals); the rest is checked there too
    allow_list = getattr(torch.serialization, 'get_safe_globals', list)()
    return (dict(CheckpointLoader._schemes), set(allow_list),
            list(warnings.filters), logging.getLogger().level,
            list(logging.getLogger().handlers))

before = state()
loaded_before = set(sys.modules)
import mmrepvgg
after = state()
for name, old, new in zip(('loaders', 'allow-list', 'warnings', 'level', 'handlers'),
                          before, after):
    assert old == new, f'import mmrepvgg changed the {name}: {old!r} -> {new!r}'
heavy = sorted(name for name in set(sys.modules) - loaded_before
               if name.split('.')[0] in ('onnx', 'onnxruntime', 'openvino')
               or name.startswith('mmrepvgg.deploy'))
assert not heavy, f'import mmrepvgg imported {heavy}'
mmrepvgg.export_onnx  # imported on first use
assert 'mmrepvgg.deploy.onnx_export' in sys.modules
print('unchanged')
'''


def test_import_changes_no_loader_allow_list_warnings_filter_or_logger():
    """Also: the exporters' runtimes (onnx, onnxruntime, openvino) load on first use only."""
    result = subprocess.run([sys.executable, '-c', PROCESS_STATE_AROUND_IMPORT],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == 'unchanged'


def package_modules():
    """(path relative to mmrepvgg/, source) of every module of the package."""
    root = os.path.join(REPO_ROOT, 'mmrepvgg')
    for path in sorted(glob.glob('**/*.py', root_dir=root, recursive=True)):
        with open(os.path.join(root, path)) as stream:
            yield path, stream.read()


def test_no_module_of_the_package_is_longer_than_450_lines():
    long_modules = {path: source.count('\n') for path, source in package_modules()
                    if source.count('\n') > 450}
    assert not long_modules, f'split these modules: {long_modules}'


def test_the_package_defines_at_most_120_public_functions_and_classes():
    """Counted in every module, private modules too (whose names PEP 8 already calls
    internal); the package's names a user should reach first are ``mmrepvgg.__all__``."""
    public = [f'{path}:{node.name}' for path, source in package_modules()
              for node in ast.parse(source).body
              if isinstance(node, (ast.FunctionDef, ast.ClassDef))
              and not node.name.startswith('_')]
    assert len(public) <= 120, public
