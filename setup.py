import os.path as osp

from setuptools import find_packages, setup


def read_requirements(name):
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    reqs = []
    with open(path) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                reqs.append(line)
    return reqs


def get_version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'fuller', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='fuller',
    version=get_version(),
    description='FULLER multi-level gradient calibration on a BEVFusion-style '
    'multi-modal multi-task 3D perception model, as an MMDetection3D '
    'extension',
    long_description=open('README.md').read() if osp.exists('README.md')
    else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['fuller', 'fuller.*']),
    python_requires='>=3.9',
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    license='Apache License 2.0',
    zip_safe=False,
)
