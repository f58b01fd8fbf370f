"""Install equiseg-mm. Pins live in constraints.txt: see the README for the one-line install."""
import os.path as osp

from setuptools import find_packages, setup


def _version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'equiseg_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='equiseg-mm',
    version=_version(),
    description='EQUISeg: balanced multimodal semantic segmentation as an MMSegmentation plugin',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['equiseg_mm', 'equiseg_mm.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1', 'mmengine>=0.10,<0.11', 'mmcv-lite>=2.0,<2.2', 'mmsegmentation>=1.2,<1.3',
        'numpy', 'ftfy', 'regex', 'matplotlib', 'opencv-python-headless',
    ],
    license='Apache-2.0',
)
