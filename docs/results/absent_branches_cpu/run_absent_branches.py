"""Eager inference latency of EQUISeg-B0 at 1024x1024, batch 1, with 4, 3, 2 and 1 of its 4
sensors present, with and without skipping the absent branches; writes absent_branches.json
and absent_branches.txt beside this file.

    .venv/bin/python docs/results/absent_branches_cpu/run_absent_branches.py [--repeats 5]

Two things are timed (``MODES``): ``model.test_step`` (data preprocessor, predict mode: logits
resized to the input and the label map) under ``protocol(missing=...)``, what
``inference_multimodal`` runs after reading the files, and the tensor mode on the preprocessed
input (backbone, neck, head). The model is the README's EQUISeg-B0 config with random weights
(``tools/analysis_tools/benchmark.py``'s ``build_model``), on one random 1024x1024 frame. Every
setting gets one untimed warm-up call (the one that computes an absent branch's output for
zeros), then the timed calls go round robin over the settings and modes, so that load drift
hits all alike. The load average before and after the timed calls is recorded.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(osp.dirname(HERE)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import benchmark  # noqa: E402,I001  (first: EQUISEG_COMPAT=all, registration)
import torch  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

CONFIG = 'configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
MODS = ['rgb', 'depth', 'event', 'lidar']
MODES = {
    'test_step': 'model.test_step under protocol(missing=...): preprocessing, predict mode '
                 '(logits resized to the input, label map), what inference_multimodal runs',
    'tensor': "model(inputs, mode='tensor') on the preprocessed input: backbone, neck, head "
              '(what tools/analysis_tools/benchmark.py times)'}
SETTINGS = [  # (label, missing modalities, skip absent branches)
    ('4 of 4 present', (), True),
    ('3 of 4 (lidar absent)', ('lidar', ), True),
    ('2 of 4 (event, lidar absent)', ('event', 'lidar'), True),
    ('1 of 4 (rgb only)', ('depth', 'event', 'lidar'), True),
    ('2 of 4, absent branches run on zeros', ('event', 'lidar'), False),
]


def lscpu() -> dict:
    """``lscpu``'s model name and a summary of the vector extensions in its flags."""
    out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    fields = dict(line.split(':', 1) for line in out.splitlines() if ':' in line)
    flags = fields.get('Flags', '').split()
    wanted = ('avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_bf16')
    return dict(model_name=fields.get('Model name', '').strip(),
                cpu_family=fields.get('CPU family', '').strip(),
                model=fields.get('Model', '').strip(), cpus=fields.get('CPU(s)', '').strip(),
                flags_summary={f: f in flags for f in wanted})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out-dir', default=HERE)
    args = parser.parse_args(argv)
    model = benchmark.build_model(osp.join(ROOT, CONFIG), None, 'cpu').eval()
    pre = model.data_preprocessor
    gen = torch.Generator().manual_seed(0)
    size = args.size
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.zeros(1, size, size, dtype=torch.long)))
    sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size),
                             pad_shape=(size, size)))
    data = dict(inputs=[torch.randint(0, 256, (12, size, size), dtype=torch.uint8,
                                      generator=gen)], data_samples=[sample])
    cache = model.backbone.branch_cache

    def timed(fn, skip):
        def run():
            model.backbone.branch_cache = cache if skip else None
            try:
                with torch.no_grad():
                    return fn()
            finally:
                model.backbone.branch_cache = cache
        return benchmark._timer(run, 'cpu')

    def predict(missing):
        with pre.protocol(missing=missing):
            return model.test_step(data)

    tasks = {}
    for label, missing, skip in SETTINGS:
        with pre.protocol(missing=missing), torch.no_grad():
            x = pre(data, False)['inputs']  # the model's input under this setting
        tasks[(label, 'test_step')] = timed(lambda m=missing: predict(m), skip)
        tasks[(label, 'tensor')] = timed(lambda x=x: model(x, mode='tensor'), skip)
    load_before = os.getloadavg()
    times = benchmark.interleaved(tasks, warmup=1, repeats=args.repeats)
    load_after = os.getloadavg()
    rows = []
    for label, missing, skip in SETTINGS:
        row = dict(setting=label, missing=list(missing), skip_absent_branches=skip)
        for mode in MODES:
            stats = benchmark._stats(times[(label, mode)])
            first = benchmark.statistics.median(times[(SETTINGS[0][0], mode)])
            row[mode] = dict(latency_s=stats, ratio_to_all_present=stats['median'] / first)
        rows.append(row)
    command = ('nice -n 19 .venv/bin/python docs/results/absent_branches_cpu/'
               f'run_absent_branches.py --size {size} --repeats {args.repeats}')
    result = dict(command=command, config=CONFIG, size=[size, size], batch=1,
                  timed=MODES,
                  machine=dict(benchmark.machine_info('cpu'), lscpu=lscpu(),
                               load_average_1_5_15_min=dict(before=load_before,
                                                            after=load_after)),
                  results=rows)
    lines = [f'$ {command}',
             f'{CONFIG}, random weights, {size}x{size}, batch 1, eager, CPU '
             f'({result["machine"]["cpu"]}; torch {torch.__version__}, '
             f'{torch.get_num_threads()} threads), {args.repeats} timed runs per setting and '
             f'mode; load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}']
    for mode in MODES:
        lines += [f'\n{mode}: {MODES[mode]}',
                  f'{"setting":<40}{"ms median":>11}{"(min-max)":>17}{"x all present":>15}']
        for row in rows:
            lat = row[mode]['latency_s']
            span = f'({lat["min"] * 1e3:.0f}-{lat["max"] * 1e3:.0f})'
            lines.append(f'{row["setting"]:<40}{lat["median"] * 1e3:11.0f}{span:>17}'
                         f'{row[mode]["ratio_to_all_present"]:15.2f}')
    text = '\n'.join(lines)
    print(text)
    with open(osp.join(args.out_dir, 'absent_branches.json'), 'w') as f:
        json.dump(result, f, indent=1)
    with open(osp.join(args.out_dir, 'absent_branches.txt'), 'w') as f:
        f.write(text + '\n')
    return result


if __name__ == '__main__':
    main()
