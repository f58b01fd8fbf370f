"""Run tools/analysis_tools/get_flops.py --shape 1024 1024 for the rows of docs/en/benchmarks.md
("Size and cost") and write each report as <name>.txt and <name>.json beside this file.

    .venv/bin/python docs/results/flops_1024/run_get_flops.py
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

E = 'configs/equiseg/'
ROWS = [
    ('equiseg_mit-b0', [E + 'equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py']),
    ('equiseg_mit-b0_plain', [E + 'equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py',
                              '--cfg-options', 'model.fast_path=False']),
    ('equiseg_mit-b0_selfattn', [E + 'equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py',
                                 '--cfg-options', 'model.neck.self_attn=True']),
    ('equiseg-paperneck_mit-b0', [E + 'equiseg-paperneck_mit-b0_8xb2-160k_deliver-rgbdel-'
                                  '1024x1024.py']),
    ('equiseg_mit-b2', [E + 'equiseg_mit-b2_8xb2-160k_deliver-rgbdel-1024x1024.py']),
    ('equiseg_mit-b2_paperneck', [E + 'equiseg_mit-b2_8xb2-160k_deliver-rgbdel-1024x1024.py',
                                  '--cfg-options', 'model.neck.aux_summary=per_primary',
                                  'model.neck.cross_sr_ratios=None', 'model.neck.self_attn=True']),
    ('segformer_mit-b0', ['configs/baselines/segformer_mit-b0_1xb8-1k_synthetic-rgb-96x96.py']),
    ('segformer_mit-b0_plain', ['configs/baselines/segformer_mit-b0_1xb8-1k_synthetic-rgb-96x96.py',
                                '--cfg-options', 'model.fast_path=False']),
]

if __name__ == '__main__':
    only = sys.argv[1:]
    for name, argv in ROWS:
        if only and name not in only:
            continue
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            info = get_flops.main([osp.join(ROOT, argv[0])] + argv[1:]
                                  + ['--shape', '1024', '1024'])
        command = ' '.join(['python tools/analysis_tools/get_flops.py', argv[0],
                            '--shape 1024 1024'] + argv[1:])
        with open(osp.join(HERE, f'{name}.txt'), 'w') as f:
            f.write(f'$ {command}\n{text.getvalue()}')
        with open(osp.join(HERE, f'{name}.json'), 'w') as f:
            json.dump(dict(command=command, **info), f, indent=1)
        print(name, round(info['flops'] / 1e9, 1), flush=True)
