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
    # mmcv is not a hard requirement, as in mmseg's own metadata: a GPU environment has full
    # `mmcv` and `mmcv-lite` would overwrite its package. The `mim` extra names full mmcv
    # (`mim install -e ".[mim]"` finds OpenMMLab's prebuilt wheels); the demo's requirements.txt
    # picks mmcv-lite (also the `lite` extra).
    # torchvision is left to the environment too (mmpretrain's models import it): a pip-chosen
    # torchvision can replace the user's torch build.
    install_requires=[
        'torch>=2.1', 'mmengine>=0.10,<0.11', 'mmsegmentation>=1.2,<1.3', 'mmpretrain>=1.0,<1.3',
        'numpy', 'ftfy', 'regex', 'matplotlib', 'opencv-python-headless',
    ],
    extras_require={
        'mim': ['mmcv>=2.0.0rc4,<2.2.0'],
        'lite': ['mmcv-lite>=2.0,<2.2'],
    },
    license='Apache-2.0',
)
