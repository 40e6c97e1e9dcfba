"""The package's layers read top-down: no module imports a layer above its own, not even
inside a function (where an upward import hides a cycle). Checked on the source (the AST
of every module), not by importing it."""
import ast
import os

import pytest

from conftest import REPO_ROOT

PACKAGE_DIR = os.path.join(REPO_ROOT, 'mmrepvgg')
# Lowest first; a module may import its own layer and those below it.
LAYERS = [
    ('utils', 'compat', 'version', 'registry', 'numerics', 'synthetic', 'reparam'),
    ('models', 'datasets', 'model_zoo'),
    ('checkpoint', ),
    ('config_file', ),
    ('engine', ),
    ('deploy', 'dense'),
    ('apis', ),
    ('official', ),
    ('analysis', ),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def package_modules():
    for folder, _, file_names in os.walk(PACKAGE_DIR):
        for file_name in sorted(file_names):
            if file_name.endswith('.py'):
                path = os.path.join(folder, file_name)
                yield os.path.relpath(path, PACKAGE_DIR)


def layer_of(relative_path: str) -> str:
    """``models/repvgg.py`` -> ``models``; ``reparam.py`` -> ``reparam``; a private module
    is in the layer of its name (``_numerics.py`` -> ``numerics``)."""
    name = relative_path.split(os.sep)[0].removesuffix('.py')
    return name if name == '__init__' else name.removeprefix('_')


def imported_layers(relative_path: str):
    """The mmrepvgg layers the module at ``relative_path`` imports, with line numbers."""
    with open(os.path.join(PACKAGE_DIR, relative_path)) as stream:
        tree = ast.parse(stream.read())
    package = ['mmrepvgg', *relative_path.split(os.sep)[:-1]]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                names = [([*base, *node.module.split('.')] if node.module else base)]
                if not node.module:  # from . import x
                    names = [[*base, alias.name] for alias in node.names]
            else:
                names = [node.module.split('.')]
        elif isinstance(node, ast.Import):
            names = [alias.name.split('.') for alias in node.names]
        else:
            continue
        for parts in names:
            if parts[0] == 'mmrepvgg' and len(parts) > 1:
                yield parts[1].removeprefix('_'), node.lineno


@pytest.mark.parametrize('relative_path', [path for path in package_modules()
                                           if path != '__init__.py'])
def test_no_module_imports_a_layer_above_its_own(relative_path):
    own = layer_of(relative_path)
    upward = [f'line {line}: mmrepvgg.{layer}' for layer, line in imported_layers(relative_path)
              if RANK[layer] > RANK[own]]
    assert not upward, f'{relative_path} (layer {own}) imports upward: {upward}'


def test_every_module_belongs_to_a_layer():
    assert {layer_of(path) for path in package_modules()} - {'__init__'} <= set(RANK)


def test_no_module_imports_the_lab():
    """benchmarks/ (its library is imported as ``lab``) imports the package, never the
    other way round: the wheel does not ship it."""
    lab_imports = []
    for relative_path in package_modules():
        with open(os.path.join(PACKAGE_DIR, relative_path)) as stream:
            tree = ast.parse(stream.read())
        for node in ast.walk(tree):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom)
                       and not node.level else [])
            lab_imports += [f'{relative_path}:{node.lineno}' for module in modules
                            if module.split('.')[0] in ('lab', 'benchmarks')]
    assert not lab_imports
