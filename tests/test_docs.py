"""The docs are tested: their recipes run as written, their links resolve, their tables and the
metafile match the results files they cite.

- The own-data recipe of ``docs/en/user_guides/datasets.md`` (its commands, taken from the page)
  trains, validates and robustness-tests the own-data config on a generated folder-per-modality
  RGB-D dataset with 16-bit 1-channel depth; the inference API of ``inference.md`` runs on the
  checkpoint.
- The single-parts config of ``train_test.md`` trains and validates.
- Every tool the docs name exists, and its ``--help`` works (in-process: importing torch in a
  subprocess per tool would cost seconds each).
- Every relative link and ``#anchor`` of README.md, configs/**/README.md and docs/**/*.md
  resolves (GitHub's anchor rules); code excerpts match the files they cite; the generated
  tables are up to date; every figure of configs/equiseg/metafile.yaml equals its results file.
"""
import contextlib
import glob
import importlib.util
import inspect
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
OWN_CONFIG = 'configs/equiseg/equiseg_mit-b0_1xb8-20k_owndata-rgbd-512x512.py'
PARTS_CONFIG = 'configs/examples/single-parts_mit-b0_1xb8-1k_synthetic-rgbd-96x96.py'
DOCS = sorted([osp.join(ROOT, 'README.md')]
              + glob.glob(osp.join(ROOT, 'configs', '**', 'README.md'), recursive=True)
              + glob.glob(osp.join(ROOT, 'docs', '**', '*.md'), recursive=True))
FENCE = re.compile(r'^```.*?^```', re.MULTILINE | re.DOTALL)


def _read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def _rel(path):
    return osp.relpath(path, ROOT)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    env.pop('LOCAL_RANK', None)
    return env


def _run(args, cwd):
    proc = subprocess.run([str(a) for a in args], cwd=str(cwd), env=_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    assert proc.returncode == 0, (f'{" ".join(map(str, args))}\nexit {proc.returncode}\n'
                                  f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


def _doc_commands(page, heading):
    """The shell commands of the first ``bash`` block after ``heading`` on a docs page, each as
    a token list (continuation lines joined, comments dropped)."""
    text = _read(osp.join(ROOT, page))
    start = text.index(heading)
    block = re.search(r'```bash\n(.*?)```', text[start:], re.DOTALL).group(1)
    joined = re.sub(r'\\\n\s*', ' ', block)
    return [shlex.split(line) for line in joined.splitlines()
            if line.strip() and not line.strip().startswith('#')]


# --- (a) the own-data recipe ----------------------------------------------------------------
def _write_rgbd(root, splits=(('train', 4), ('val', 2)), hw=(48, 64)):
    """A folder-per-modality RGB-D dataset of docs/en/user_guides/datasets.md: 8-bit RGB,
    1-channel 16-bit depth in millimetres, 8-bit labels of the config's three classes."""
    rng = np.random.default_rng(0)
    h, w = hw
    for split, num in splits:
        for sub in ('rgb', 'depth', 'labels'):
            os.makedirs(osp.join(root, sub, split), exist_ok=True)
        for i in range(num):
            label = np.zeros((h, w), np.uint8)
            label[:, w // 2:] = 1
            label[h * 2 // 3:, :w // 3] = 2
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            rgb[label == 1] //= 2
            depth = (1500 + 3000 * label.astype(np.int64)
                     + rng.integers(0, 500, (h, w))).astype(np.uint16)
            name = f'frame{i:02d}.png'
            cv2.imwrite(osp.join(root, 'rgb', split, name), rgb)
            cv2.imwrite(osp.join(root, 'depth', split, name), depth)
            cv2.imwrite(osp.join(root, 'labels', split, name), label)
    return str(root)


def _as_run(command, data_root, work_dir, extra):
    """A command of the docs with this test's paths and interpreter, ``extra`` appended (the
    commands end with their ``--cfg-options``)."""
    out = []
    for token in command:
        token = token.replace('data/my_rgbd', data_root).replace('work_dirs/owndata_check',
                                                                 work_dir)
        out.append(sys.executable if token == '.venv/bin/python' else token)
    assert out[1].startswith('tools/') and '--cfg-options' in out, command
    return out + extra


def test_own_data_recipe_runs_as_written(tmp_path):
    data_root = _write_rgbd(tmp_path / 'my_rgbd')
    work_dir = str(tmp_path / 'work_dir')
    train, test = _doc_commands('docs/en/user_guides/datasets.md', '### Check the data')
    assert train[1] == 'tools/train.py' and test[1] == 'tools/test.py'
    assert train[2] == OWN_CONFIG and test[2] == OWN_CONFIG
    # the docs' commands, shrunk to the tiny frames: small crops, no dataloader workers
    workers = ['{}.num_workers=0', '{}.persistent_workers=False']
    train_extra = ['train_dataloader.batch_size=2', 'model.data_preprocessor.size=(32,32)',
                   'train_dataloader.dataset.pipeline.2.scale=(64,48)',
                   'train_dataloader.dataset.pipeline.3.crop_size=(32,32)']
    train_extra += [w.format(loader) for loader in ('train_dataloader', 'val_dataloader')
                    for w in workers]
    proc = _run(_as_run(train, data_root, work_dir, train_extra), cwd=ROOT)
    assert 'Iter(val) [2/2]' in proc.stdout + proc.stderr  # validated after 2 iterations
    checkpoint = osp.join(work_dir, 'iter_2.pth')
    assert test[3] == 'work_dirs/owndata_check/iter_2.pth' and osp.isfile(checkpoint)

    _run(_as_run(test, data_root, work_dir, [w.format('test_dataloader') for w in workers]),
         cwd=ROOT)
    reports = glob.glob(osp.join(work_dir, '*', 'robustness_report.json'))
    assert reports and all(osp.isfile(r[:-len('json')] + ext) for r in reports
                           for ext in ('md', 'png'))
    report = json.loads(_read(sorted(reports)[-1]))
    assert report['modalities'] == ['rgb', 'depth']
    assert report['classes'] == ['background', 'person', 'car']
    assert set(report['settings']['EMM']) == {'full', 'rgb', 'depth'}
    for key in ('EMM_avg', 'EMM_E@0.2', 'delta/depth', 'single/rgb', 'balance_cv'):
        assert np.isfinite(report['figures'][key]), key

    # docs/en/user_guides/inference.md on the trained model: both sensors, then depth absent
    from equiseg_mm.apis import inference_multimodal, init_multimodal_model, save_prediction
    model = init_multimodal_model(osp.join(ROOT, OWN_CONFIG), checkpoint, device='cpu')
    assert model.dataset_meta['classes'] == ('background', 'person', 'car')
    rgb = osp.join(data_root, 'rgb', 'val', 'frame00.png')
    depth = osp.join(data_root, 'depth', 'val', 'frame00.png')
    result = inference_multimodal(model, {'rgb': rgb, 'depth': depth})
    assert tuple(result.pred_sem_seg.data.shape) == (1, 48, 64)
    result = inference_multimodal(model, {'rgb': rgb, 'depth': None})
    assert result.metainfo['missing_modalities'] == ('depth', )
    paths = save_prediction(model, result, str(tmp_path / 'out' / 'a.png'), rgb=rgb)
    assert cv2.imread(paths['label'], cv2.IMREAD_UNCHANGED).shape == (48, 64)
    assert osp.isfile(paths['overlay'])


# --- (b) the single-parts config --------------------------------------------------------------
def test_single_parts_config_trains_and_validates(tmp_path):
    from _synthetic_deliver import make_synthetic_deliver
    data_root = str(tmp_path / 'synthetic_deliver')
    make_synthetic_deliver(data_root, num_train=4, num_val=2, num_test=2, size=(48, 64))
    header = _read(osp.join(ROOT, PARTS_CONFIG))
    assert f'.venv/bin/python tools/train.py {PARTS_CONFIG}' in header  # its documented command
    options = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
               f'train_dataloader.dataset.data_root={data_root}',
               f'val_dataloader.dataset.data_root={data_root}', 'train_dataloader.batch_size=2']
    for loader in ('train_dataloader', 'val_dataloader'):
        options += [f'{loader}.num_workers=0', f'{loader}.persistent_workers=False']
    work_dir = tmp_path / 'work_dir'
    proc = _run([sys.executable, 'tools/train.py', PARTS_CONFIG, '--work-dir', work_dir,
                 '--cfg-options'] + options, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert 'aux.loss_sgm' in log and 'Iter(val) [1/1]' in log
    assert osp.isfile(work_dir / 'iter_2.pth')


def test_single_parts_config_uses_stock_mmseg_segmentor():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, PARTS_CONFIG))
    assert cfg.model.type == 'EncoderDecoder' and cfg.model.test_cfg.mode == 'whole'
    assert cfg.test_cfg.type == 'MissingModalityTestLoop'
    assert all(list(cfg[f'{s}_dataloader'].dataset.modalities) == ['rgb', 'depth']
               for s in ('train', 'val', 'test'))


# --- (c) every tool the docs name -------------------------------------------------------------
def _named_tools():
    names = set()
    for path in DOCS + [osp.join(ROOT, OWN_CONFIG), osp.join(ROOT, PARTS_CONFIG)]:
        names.update(re.findall(r'(?<![\w./-])(tools/[\w/.-]+\.(?:py|sh))', _read(path)))
    return sorted(names)


def test_docs_name_tools():
    tools = _named_tools()
    assert {'tools/train.py', 'tools/test.py', 'tools/infer.py',
            'tools/analysis_tools/benchmark.py', 'tools/analysis_tools/modality_stats.py',
            'tools/model_converters/convert_mit_checkpoint.py',
            'tools/misc/results_tables.py'} <= set(tools)


@pytest.mark.parametrize('tool', _named_tools())
def test_named_tool_exists_and_prints_help(tool, monkeypatch, capsys):
    path = osp.join(ROOT, tool)
    assert osp.isfile(path), f'the docs name {tool}, which does not exist'
    if not tool.endswith('.py'):
        return
    spec = importlib.util.spec_from_file_location(
        '_doc_tool_' + re.sub(r'\W', '_', tool), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entry = getattr(module, 'parse_args', None) or module.main
    if tool == 'tools/infer.py':  # its options depend on the config: main() builds the parser
        entry = module.main
    monkeypatch.setattr(sys, 'argv', [osp.basename(tool), '--help'])
    with pytest.raises(SystemExit) as exc:
        entry(['--help']) if inspect.signature(entry).parameters else entry()
    assert exc.value.code == 0
    assert 'usage:' in capsys.readouterr().out


# --- (d) links, anchors, excerpts, tables, metafile -------------------------------------------
def _anchors(text):
    """GitHub's heading anchors of a Markdown text: lowercase, punctuation but '-' and '_'
    dropped, spaces to '-', repeats numbered."""
    seen, anchors = {}, set()
    for line in FENCE.sub('', text).splitlines():
        match = re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        title = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', match.group(1))
        slug = re.sub(r'[^\w\- ]', '', title.replace('`', '').lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f'{slug}-{count}')
    return anchors


def test_github_anchor_rules():
    text = '# A `--resume` guide\n## Your own RGB+X data\n## Your own RGB+X data\n'
    assert _anchors(text) == {'a---resume-guide', 'your-own-rgbx-data', 'your-own-rgbx-data-1'}


@pytest.mark.parametrize('page', DOCS, ids=[_rel(p) for p in DOCS])
def test_links_and_anchors_resolve(page):
    text = _read(page)
    broken = []
    for target in re.findall(r'\]\(([^)\s]+)\)', FENCE.sub('', text)):
        if re.match(r'^[a-z]+://|^mailto:', target):
            continue
        path, _, anchor = target.partition('#')
        resolved = osp.normpath(osp.join(osp.dirname(page), path)) if path else page
        if not osp.exists(resolved):
            broken.append(f'{target} (no file {_rel(resolved)})')
        elif anchor and (not resolved.endswith('.md') or anchor not in _anchors(_read(resolved))):
            broken.append(f'{target} (no heading #{anchor} in {_rel(resolved)})')
    assert not broken, f'{_rel(page)}: ' + '; '.join(broken)


@pytest.mark.parametrize('page', DOCS, ids=[_rel(p) for p in DOCS])
def test_code_excerpts_match_their_files(page):
    """A code block whose first line is ``# <file> (excerpt)`` shows lines of that file, in
    order."""
    for block in re.findall(r'```\w*\n(.*?)```', _read(page), re.DOTALL):
        first, *lines = block.splitlines()
        match = re.match(r'# (\S+) \(excerpt\)$', first)
        if not match:
            continue
        source = [line.strip() for line in _read(osp.join(ROOT, match.group(1))).splitlines()]
        pos = 0
        for line in (line.strip() for line in lines if line.strip()):
            assert line in source[pos:], f'{_rel(page)}: {line!r} is not in {match.group(1)}'
            pos = source.index(line, pos) + 1


def test_generated_tables_are_up_to_date(capsys):
    spec = importlib.util.spec_from_file_location(
        '_results_tables', osp.join(ROOT, 'tools', 'misc', 'results_tables.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = module.main
    pages = [p for p in DOCS if '<!-- table:' in _read(p)]
    assert len(pages) >= 3
    assert main(['--check'] + pages) == 0, capsys.readouterr().out


def test_metafile_figures_equal_their_results_files():
    meta = yaml.safe_load(_read(osp.join(ROOT, 'configs', 'equiseg', 'metafile.yaml')))
    assert meta['Collections'][0]['Name'] == 'EQUISeg'
    keys = {'mIoU': 'mm/mIoU', 'EMM avg': 'mm/EMM_avg', 'E(0.2)': 'mm/EMM_E@0.2',
            'E(0.1)': 'mm/EMM_E@0.1', 'E(0.05)': 'mm/EMM_E@0.05'}
    for model in meta['Models']:
        assert model['In Collection'] == 'EQUISeg'
        assert osp.isfile(osp.join(ROOT, model['Config'])), model['Name']
        info = model['Metadata']
        results = json.loads(_read(osp.join(ROOT, info['Results file'])))
        variant = info.get('Results variant')
        if variant:
            stats = results['stats'][variant]
            figures = {k: stats[v][0] for k, v in keys.items()}
            figures.update({f'{k} std': stats[v][1] for k, v in keys.items()})
        else:
            figures = {k: results['metrics'][v] for k, v in keys.items()}
        metrics = model['Results']['Metrics']
        assert set(metrics) == set(figures), model['Name']
        for key, value in metrics.items():
            assert value == round(figures[key], 2), f'{model["Name"]}: {key}'


def test_readme_main_table_is_the_summary_file():
    """The figures of the README's one table are those of docs/demo_summary.txt."""
    readme = _read(osp.join(ROOT, 'README.md'))
    table = readme[readme.index('| figure (seed 0, CPU)'):]
    table = table[:table.index('\n\n')]
    summary = set(re.findall(r'\d+\.\d+', _read(osp.join(ROOT, 'docs', 'demo_summary.txt'))))
    numbers = re.findall(r'\d+\.\d+', table.split('\n', 2)[2])
    assert len(numbers) >= 20 and set(numbers) <= summary, set(numbers) - summary


def test_readme_is_a_landing_page():
    readme = _read(osp.join(ROOT, 'README.md'))
    assert len(readme.splitlines()) <= 250
    commands = ('```bash\nmake demo   # set up .venv, generate the synthetic data, train + '
                'evaluate EQUISeg, print the report\nmake test   # set up (or reuse) .venv and '
                'run the test suite\n```')
    assert readme.index(commands) < readme.index('\n## ')  # the two commands come first
    with contextlib.suppress(FileNotFoundError):
        assert 'make test' in _read(osp.join(ROOT, '.ci', 'run'))
    # present tense: the product says what it does, not how the work went
    narrative = re.compile(r'\b(morning|afternoon|evening|session|earlier README|former '
                           r'README|today)\b', re.IGNORECASE)
    for page in DOCS:
        hits = narrative.findall(_read(page))
        assert not hits, f'{_rel(page)}: {hits}'
