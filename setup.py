"""pip install . (or -e . for development). Wheels also carry configs/, tools/ and
model-index.yml in the package's .mim folder, as OpenMMLab packages do, so that
`mim train mmrepvgg CONFIG` and the model zoo work outside the checkout.

Built from a git checkout, the sdist and the wheel hold only the files git tracks there:
a user's own configs/my_project/ or a __pycache__ folder stays out of the package."""
import os
import shutil
import subprocess

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
# Copied into mmrepvgg/.mim of a built package (an editable install reads the checkout).
MIM_RESOURCES = ('configs', 'tools', 'model-index.yml')


def read_requirements(path):
    with open(path) as stream:
        return [line.strip() for line in stream
                if line.strip() and not line.startswith('#')]


# mmcv, full or lite, is not required: a full mmcv (CUDA ops, built for one torch) comes from
# `mim install` (the mim extra, requirements/mminstall.txt, as OpenMMLab packages declare it);
# the lite extra is for environments without one. Installing mmcv-lite over a full mmcv would
# mix two distributions' files in one `mmcv` module.
MMCV_LITE = 'mmcv-lite>=2.0.0,<2.4.0'
EXTRAS = {
    'onnx': ['onnx>=1.16', 'onnxruntime>=1.19'],
    'demo': ['scikit-learn'],
    'plot': ['matplotlib'],
    'openvino': ['openvino', 'nncf'],  # second INT8 runtime (mmrepvgg.deploy.openvino_runtime)
    'torch-int8': ['torchao'],  # INT8 inside PyTorch (mmrepvgg.deploy.torch_int8)
    'photos': ['scikit-image', 'scikit-learn', 'matplotlib'],  # the lab's photos data set
    'seg': read_requirements('requirements/seg.txt'),
    'det': read_requirements('requirements/det.txt'),
}


def git_tracked_files():
    """The paths git tracks, relative to this folder, when it is the top of a git checkout;
    None otherwise (an unpacked sdist holds only what the sdist filter let in)."""
    try:
        top = subprocess.run(['git', 'rev-parse', '--show-toplevel'], cwd=HERE, check=True,
                             capture_output=True, text=True).stdout.strip()
        if os.path.realpath(top) != os.path.realpath(HERE):
            return None  # an sdist unpacked inside some other repository
        listed = subprocess.run(['git', 'ls-files', '-z'], cwd=HERE, check=True,
                                capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(os.fsdecode(listed).split('\0')) - {''}


def is_shipped(path, tracked):
    """Whether a file of MIM_RESOURCES (relative path) belongs in the sdist and wheel."""
    parts = path.replace(os.sep, '/').split('/')
    if '__pycache__' in parts or path.endswith(('.pyc', '.pyo')):
        return False
    return tracked is None or path.replace(os.sep, '/') in tracked


def mim_resource_files():
    """The files of :data:`MIM_RESOURCES` to ship, sorted."""
    tracked = git_tracked_files()
    files = []
    for resource in MIM_RESOURCES:
        if os.path.isfile(resource):
            files.append(resource)
        for folder, _, file_names in os.walk(resource):
            files += [os.path.join(folder, name) for name in file_names]
    return sorted(path for path in files if is_shipped(path, tracked))


class BuildPyWithMim(build_py):
    """build_py that also copies :func:`mim_resource_files` into ``mmrepvgg/.mim``."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        mim_root = os.path.join(self.build_lib, 'mmrepvgg', '.mim')
        for path in mim_resource_files():
            target = os.path.join(mim_root, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target)


class SdistTrackedOnly(sdist):
    """sdist whose MIM_RESOURCES files are only the shipped ones (MANIFEST.in's patterns
    would also take a user's untracked configs)."""

    def make_release_tree(self, base_dir, files):
        tracked = git_tracked_files()
        files = [path for path in files
                 if not path.startswith(tuple(MIM_RESOURCES)) or is_shipped(path, tracked)]
        super().make_release_tree(base_dir, files)


version = {}
with open('mmrepvgg/version.py') as stream:
    exec(stream.read(), version)

setup(
    name='mmrepvgg',
    version=version['__version__'],
    description='RepVGG for mmpretrain / mmengine with exact structural re-parameterization',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmrepvgg', 'mmrepvgg.*']),
    cmdclass={'build_py': BuildPyWithMim, 'sdist': SdistTrackedOnly},
    python_requires='>=3.10',
    install_requires=read_requirements('requirements/install.txt'),
    extras_require={
        **EXTRAS,
        'all': sorted({package for packages in EXTRAS.values() for package in packages}),
        'lite': [MMCV_LITE],
        'mim': read_requirements('requirements/mminstall.txt'),
        'tests': read_requirements('requirements/tests.txt'),
    },
    license='Apache-2.0',
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
    ],
)
