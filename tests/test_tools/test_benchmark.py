"""tools/analysis_tools/benchmark.py and tools/analysis_tools/get_flops.py at tiny sizes.

The benchmark runs for real (tiny EQUISeg config and the shipped SegFormer-B0 reference, 64 x
64, one timed run); its structure is checked, never its timings.
"""
import importlib.util
import json
import os.path as osp

import pytest
import torch

from tiny_config import ROOT, TOOLS, write_tiny_config

SEGFORMER_LABEL = 'segformer_mit-b0_1xb8-1k_synthetic-rgb-96x96'
SEGFORMER = osp.join(ROOT, 'configs', 'baselines', f'{SEGFORMER_LABEL}.py')


def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(TOOLS, 'analysis_tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def bench():
    threads = torch.get_num_threads()
    yield _load('benchmark')
    torch.set_num_threads(threads)  # --threads sets the process's thread count


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """The tool tests' tiny EQUISeg config (8-channel MiT stages, RGB-D-E-L: 12 channels)."""
    root = tmp_path_factory.mktemp('bench')
    return write_tiny_config(root / 'tiny_equiseg.py', str(root))


@pytest.fixture(scope='module')
def run(bench, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp('bench_out') / 'sub' / 'bench.json'
    result = bench.main([tiny, SEGFORMER, '--sizes', '64', '--repeats', '1', '--warmup', '0',
                         '--threads', '1', '--train-repeats', '1', '--device', 'cpu',
                         '--out', str(out)])
    return result, out


def test_parse_args_defaults(bench, tiny):
    args = bench.parse_args([tiny])
    assert (args.configs, args.sizes, args.repeats, args.warmup, args.batch) == \
        ([tiny], [512, 1024], 10, 2, 1)
    assert args.train_repeats == 0 and args.threads is None and args.cfg_options is None
    assert (args.train, args.crop, args.with_cp, args.amp) == (False, [512, 512], False, None)
    assert args.device == ('cuda' if torch.cuda.is_available() else 'cpu')
    args = bench.parse_args([tiny, SEGFORMER, '--cfg-options', 'model.fast_path=False'])
    assert args.configs == [tiny, SEGFORMER] and args.cfg_options == {'model.fast_path': False}


@pytest.mark.parametrize('argv, message', [
    (['missing_config.py'], "config file 'missing_config.py' does not exist"),
    (['{tiny}', '--sizes', '100'], '--sizes must be multiples of 32'),
    (['{tiny}', '--repeats', '0'], '--repeats, --batch, --threads must be >= 1'),
    (['{tiny}', '--train-repeats', '-1'], '--train-repeats >= 0'),
    (['{tiny}', '{tiny}'], 'a config is given twice'),
])
def test_bad_arguments_name_the_problem(bench, tiny, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bench.main([a.format(tiny=tiny) for a in argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_label_is_the_file_name_and_the_options(bench):
    assert bench.label(SEGFORMER) == SEGFORMER_LABEL
    assert bench.label(SEGFORMER, {'model.fast_path': False, 'model.decode_head.channels': 64}) \
        == f'{SEGFORMER_LABEL} model.fast_path=False model.decode_head.channels=64'


def test_two_configs_table_and_json(bench, run):
    result, out = run
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    machine = result['machine']
    assert {'cpu', 'cores', 'threads', 'device', 'torch', 'mmseg', 'mmengine'} <= set(machine)
    assert 'cores' in machine['cpu'] and machine['threads'] == 1  # cpu_name(): model, SIMD
    assert result['settings']['sizes'] == [64] and result['settings']['train_repeats'] == 1
    rows = result['results']['64']
    assert list(rows) == ['tiny_equiseg', SEGFORMER_LABEL]  # the configs' order
    for row in rows.values():
        assert row['params'] > 0 and row['flops'] > 0
        assert set(row['latency_s']) == {'median', 'min', 'max', 'runs'}
        assert len(row['latency_s']['runs']) == 1 and len(row['train_iter_s']['runs']) == 1
        assert row['peak_memory_bytes'] is None or row['peak_memory_bytes'] >= 0
        assert set(row['ratio']) == {'latency', 'flops', 'params', 'peak_memory', 'train_iter'}
    first, second = rows.values()
    assert first['ratio']['latency'] == first['ratio']['flops'] == \
        first['ratio']['train_iter'] == 1.0
    assert second['ratio']['flops'] == pytest.approx(second['flops'] / first['flops'])
    assert second['params'] == 3721593  # mmseg's SegFormer-B0 with 25 classes
    table = bench.format_table(result)
    assert 'tiny_equiseg' in table and SEGFORMER_LABEL in table and 'x first' in table
    assert '64x64, batch 1, cpu, 1 threads' in table and '1 multiply-add = 1 FLOP' in table


def test_cfg_options_reach_the_model_and_the_label(bench, capsys):
    result = bench.main([SEGFORMER, '--sizes', '64', '--repeats', '1', '--warmup', '0',
                         '--threads', '1', '--device', 'cpu',
                         '--cfg-options', 'model.fast_path=False'])
    label = f'{SEGFORMER_LABEL} model.fast_path=False'
    assert list(result['results']['64']) == [label] and label in capsys.readouterr().out
    assert result['settings']['cfg_options'] == {'model.fast_path': False}
    assert 'train_iter_s' not in result['results']['64'][label]  # --train-repeats 0
    stock = bench.build_model(SEGFORMER, {'model.fast_path': False}, 'cpu')
    fast = bench.build_model(SEGFORMER, None, 'cpu')
    assert (stock.fast_path, fast.fast_path) == (False, True)
    assert type(stock.decode_head).__name__ == 'SegformerHead' != type(fast.decode_head).__name__


def test_build_model_drops_pretrained_weights_and_fixed_size(bench, tiny, tmp_path):
    """A Pretrained init_cfg in the backbone's ``branch`` (which MultiModalMiT moves to its own
    init_cfg) is dropped; the preprocessor pads to a multiple of 32 instead of 1024 x 1024."""
    config = tmp_path / 'pretrained.py'
    config.write_text(
        f'_base_ = [{tiny!r}]\n'
        'model = dict(data_preprocessor=dict(size=(1024, 1024)), backbone=dict(branch=dict(\n'
        "    type='MixVisionTransformer', embed_dims=8, num_layers=[1] * 4, num_heads=[1] * 4,\n"
        "    init_cfg=dict(type='Pretrained', checkpoint='missing.pth'))))\n")
    model = bench.build_model(str(config), None, 'cpu')
    assert model.backbone.init_cfg is None and not model.training
    assert (model.data_preprocessor.size, model.data_preprocessor.size_divisor) == (None, 32)
    assert type(model.backbone.branches[0]).__name__.endswith('MixVisionTransformer')


def test_interleaved_runs_round_robin(bench):
    calls = []
    tasks = {n: (lambda n=n: calls.append(n) or 0.5) for n in 'AB'}
    times = bench.interleaved(tasks, warmup=1, repeats=2)
    # warm-up of each, then rounds A, B, A, B
    assert calls == ['A', 'B', 'A', 'B', 'A', 'B'] and times == {'A': [0.5] * 2, 'B': [0.5] * 2}


def test_get_flops_parts_and_counted_attention(capsys):
    flops = _load('get_flops')
    info = flops.main([osp.join(ROOT, 'configs', 'equiseg',
                                'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'),
                       '--shape', '64', '--modalities', 'rgb', 'depth'])
    text = capsys.readouterr().out
    assert 'backbone[rgb]' in text and 'backbone[depth]' in text and 'neck.stage1' in text
    assert '1 multiply-add = 1 FLOP' in text
    parts = info['parts']
    top = sum(v['flops'] for k, v in parts.items() if not k.startswith(' '))
    assert top == info['flops'] and parts['backbone[rgb]']['flops'] == \
        parts['backbone[depth]']['flops']
    assert info['by_operator']['scaled_dot_product_attention'] > 0
    assert info['by_operator']['avg_pool2d'] > 0
    assert info['params_auxiliary'] == 0  # the SGM head has no parameters


def test_train_mode_levers_table_and_json(bench, tiny, tmp_path):
    """--train with both levers: per config the plain row, each lever and both; seconds per
    iteration, peak memory and the state size; the levers reach the models."""
    out = tmp_path / 'train.json'
    result = bench.main([tiny, SEGFORMER, '--train', '--crop', '64', '96', '--batch', '2',
                         '--with-cp', '--amp', 'bf16', '--repeats', '1', '--warmup', '0',
                         '--threads', '1', '--device', 'cpu', '--out', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    settings = result['settings']
    assert settings['mode'] == 'train' and settings['crop'] == [64, 96]
    assert (settings['batch'], settings['with_cp'], settings['amp']) == (2, True, 'bf16')
    rows = result['results']
    levers = ['plain', 'with_cp', 'amp bf16', 'with_cp + amp bf16']
    assert list(rows) == [f'{name} [{lever}]' for name in ('tiny_equiseg', SEGFORMER_LABEL)
                          for lever in levers]
    for name, row in rows.items():
        assert len(row['train_iter_s']['runs']) == 1 and row['train_iter_s']['median'] > 0
        assert row['peak_memory_bytes'] is None or row['peak_memory_bytes'] >= 0
        assert row['state_bytes'] == 3 * 4 * row['params']  # fp32 weights + AdamW moments
        assert row['with_cp'] == ('with_cp' in name) and row['amp'] == \
            ('bf16' if 'amp' in name else None)
    assert rows[f'{SEGFORMER_LABEL} [plain]']['ratio']['train_iter'] == 1.0
    table = bench.format_train_table(result)
    assert 'crop 64x96, batch 2, cpu, 1 threads' in table and 'x plain' in table
    assert 'tiny_equiseg [with_cp + amp bf16]' in table


def test_train_mode_builds_the_levers(bench, tiny):
    model = bench.build_model(tiny, None, 'cpu', with_cp=True)
    assert model.neck.with_cp == [True] * 4
    blocks = [b for branch in model.backbone.branches for layer in branch.layers
              for b in layer[1]]
    assert blocks and all(b.with_cp for b in blocks)
    segformer = bench.build_model(SEGFORMER, None, 'cpu', with_cp=True)
    assert all(b.with_cp for layer in segformer.backbone.layers for b in layer[1])
    wrapper = bench._optim_wrapper(segformer, 'cpu', 'fp16')
    assert isinstance(wrapper, bench.CPUAutocastOptimWrapper)
    with wrapper.optim_context(segformer):
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.float16
    assert bench.lever_variants(False, None) == [dict(with_cp=False, amp=None)]
    assert [bench.variant_label(v) for v in bench.lever_variants(False, 'fp16')] == \
        ['plain', 'amp fp16']


@pytest.mark.parametrize('argv, message', [
    (['{tiny}', '--with-cp'], '--with-cp and --amp are training levers'),
    (['{tiny}', '--amp', 'bf16'], '--with-cp and --amp are training levers'),
    (['{tiny}', '--train', '--crop', '100'], '--crop takes H [W], multiples of 32'),
    (['{tiny}', '--train', '--crop', '64', '64', '64'], '--crop takes H [W]'),
])
def test_train_mode_bad_arguments(bench, tiny, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bench.main([a.format(tiny=tiny) for a in argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
