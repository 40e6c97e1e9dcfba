"""pip install . (or -e . for development). Wheels also carry configs/, tools/ and
model-index.yml in the package's .mim folder, as OpenMMLab packages do, so that
`mim train mmrepvgg CONFIG` and the model zoo work outside the checkout."""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# Copied into mmrepvgg/.mim of a built package (an editable install reads the checkout).
MIM_RESOURCES = ('configs', 'tools', 'model-index.yml')
EXTRAS = {
    'onnx': ['onnx', 'onnxruntime'],
    'demo': ['scikit-learn'],
    'openvino': ['openvino', 'nncf'],  # second INT8 runtime (mmrepvgg.deploy.openvino_runtime)
    'photos': ['scikit-image', 'scikit-learn', 'matplotlib'],  # the photos data set
}


def read_requirements(path):
    with open(path) as stream:
        return [line.strip() for line in stream
                if line.strip() and not line.startswith('#')]


class BuildPyWithMim(build_py):
    """build_py that also copies :data:`MIM_RESOURCES` into ``mmrepvgg/.mim``."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        mim_root = os.path.join(self.build_lib, 'mmrepvgg', '.mim')
        for resource in MIM_RESOURCES:
            target = os.path.join(mim_root, resource)
            if os.path.isdir(resource):
                shutil.copytree(resource, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                os.makedirs(mim_root, exist_ok=True)
                shutil.copy2(resource, target)


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
    cmdclass={'build_py': BuildPyWithMim},
    python_requires='>=3.10',
    install_requires=read_requirements('requirements/install.txt'),
    extras_require={
        **EXTRAS,
        'all': sorted({package for packages in EXTRAS.values() for package in packages}),
        'tests': read_requirements('requirements/tests.txt'),
    },
    license='Apache-2.0',
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
    ],
)
