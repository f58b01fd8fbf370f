"""Run tools/analysis_tools/get_flops.py at 96x96 and 512x512 for the branch configs of
docs/en/user_guides/backbones.md and write each report as <config>_<size>.txt / .json here.

    .venv/bin/python docs/results/flops_branches/run_get_flops.py
"""
import contextlib
import io
import json
import os.path as osp
import sys

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(osp.dirname(HERE)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import get_flops  # noqa: E402

CONFIGS = ['equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96',
           'equiseg_convnext-v2-atto_1xb8-1k_synthetic-rgbdel-96x96',
           'equiseg_swin-tiny-patch4-window7_1xb8-1k_synthetic-rgbdel-96x96']

if __name__ == '__main__':
    for name in CONFIGS:
        for size in (96, 512):
            config = f'configs/equiseg/{name}.py'
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                info = get_flops.main([osp.join(ROOT, config), '--shape', str(size)])
            command = f'python tools/analysis_tools/get_flops.py {config} --shape {size}'
            with open(osp.join(HERE, f'{name}_{size}.txt'), 'w') as f:
                f.write(f'$ {command}\n{text.getvalue()}')
            with open(osp.join(HERE, f'{name}_{size}.json'), 'w') as f:
                json.dump(dict(command=command, **info), f, indent=1)
            print(name, size, round(info['flops'] / 1e9, 2), flush=True)
