from setuptools import find_packages, setup


def read_requirements(path):
    with open(path) as stream:
        return [line.strip() for line in stream
                if line.strip() and not line.startswith('#')]


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
    python_requires='>=3.9',
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={'tests': read_requirements('requirements/tests.txt')},
    license='Apache-2.0',
)
