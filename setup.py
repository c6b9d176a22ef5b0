import os.path as osp

from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'slak_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_requirements(name):
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    with open(path) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


setup(
    name='slak_mm',
    version=read_version(),
    description='SLaK (Sparse Large Kernel Network) backbone, sparse training '
    'and tools for the OpenMMLab 2.x toolchain',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.9',
    install_requires=['torch>=2.0', 'mmengine>=0.10.0,<1.0', 'numpy'],
    extras_require={
        'toolkits': read_requirements('toolkits.txt'),
        'tests': read_requirements('tests.txt'),
    },
    license='MIT',
    zip_safe=False,
)
