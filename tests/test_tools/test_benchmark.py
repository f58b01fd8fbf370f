"""tools/analysis_tools/benchmark.py and tools/analysis_tools/get_flops.py: a tiny smoke run of
their functions.

Structure only (keys, interleaved order, FLOP bookkeeping); no timing is asserted.
"""
import importlib.util
import json
import os
import os.path as osp
import platform
import subprocess
import sys

import pytest
import torch

from tiny_config import TOOLS

MODELS = ['equiseg-b0', 'segformer-b0', 'segformer-b0-fast', 'segformer-b0-cl']


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
    torch.set_num_threads(threads)  # the tool sets its own thread count


def test_quick_run_json(bench, tmp_path, tiny_data):
    out = tmp_path / 'bench.json'
    result = bench.main(['--quick', '--models', *MODELS, '--threads', '1', '--no-memory',
                         '--data-root', tiny_data, '--data-samples', '2', '--device', 'cpu',
                         '--out', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    for key in ('cpu_model', 'logical_cores', 'torch_threads', 'torch'):
        assert key in result['machine']
    assert result['settings']['sizes'] == [64] and result['settings']['models'] == MODELS
    per_model = result['results']['64']
    assert list(per_model) == MODELS
    for name, res in per_model.items():
        assert res['params'] > 0 and res['flops'] > 0, name
        assert set(res['latency_s']) >= {'median', 'min', 'max', 'runs', 'system_s'}
        assert res['latency_s']['system_s'] >= 0
        assert len(res['latency_s']['runs']) == 2 and len(res['train_iter_s']['runs']) == 1
        assert 'aten::scaled_dot_product_attention' not in res['flops_not_counted']
    eq = per_model['equiseg-b0']
    assert eq['flops_by_part']['neck'] > 0
    assert eq['flops_by_part']['  neck.stage1'] <= eq['flops_by_part']['neck']
    # stock and weights-off attention do the same arithmetic (bmm vs fused kernel)
    assert per_model['segformer-b0']['flops'] == per_model['segformer-b0-fast']['flops'] \
        == per_model['segformer-b0-cl']['flops']
    ratios = result['ratios']['64']['equiseg-b0']
    assert set(ratios) == {'segformer-b0', 'segformer-b0-fast', 'segformer-b0-cl'}
    assert result['settings']['malloc_keep'] is False
    assert set(ratios['segformer-b0']) == {'flops', 'latency', 'latency_per_flops',
                                           'train_iter', 'peak_memory'}
    assert ratios['segformer-b0']['peak_memory'] is None  # --no-memory
    # interleaved: A, B, C, A, B, C within every timed block
    for tag in ('latency@64', 'train@64'):
        order = [(name, rep) for t, name, rep in result['schedule'] if t == tag]
        reps = len(order) // len(MODELS)
        assert order == [(name, rep) for rep in range(reps) for name in MODELS], tag
    loader = result['dataloader']
    assert loader['samples_per_s_per_worker'] > 0 and loader['sample_shape'][0] == 12
    assert 'ratios to SegFormer-B0 (RGB, stock)' in bench.format_table(result)


def test_round_robin_interleaves(bench):
    calls, schedule = [], []
    tasks = {n: (lambda n=n: calls.append(n) or 0.0) for n in 'ABC'}
    times = bench._round_robin(list('ABC'), tasks, warmup=1, repeats=2, schedule=schedule,
                               tag='t')
    assert calls == list('ABCABCABC')  # warm-up, then two interleaved rounds
    assert [s[1] for s in schedule] == list('ABCABC') and times['A'] == [0.0, 0.0]


def test_both_allocators_and_the_target_line(bench, tmp_path, capsys):
    """--allocator both: the latency runs again in a fresh process with glibc keeping freed
    memory; the target is checked for each setting that timed both of its models."""
    out = tmp_path / 'bench.json'
    result = bench.main(['--quick', '--models', 'equiseg-b0', 'segformer-b0-cl', '--threads',
                         '1', '--no-memory', '--data-samples', '0', '--train-repeats', '0',
                         '--allocator', 'both', '--out', str(out)])
    text = capsys.readouterr().out
    assert 'allocator: default' in text and 'allocator: keep' in text
    keep = result['other_allocators']['keep']
    assert keep['settings']['allocator'] == 'keep' and keep['settings']['malloc_keep'] is True
    assert result['settings']['allocator'] == 'default'
    assert list(keep['results']['64']) == ['equiseg-b0', 'segformer-b0-cl']
    assert result['target'] == []  # the target size (1024) was not run
    size = str(bench.TARGET['size'])
    fake = {'settings': {'allocator': 'default'}, 'results': {size: {
        'equiseg-b0': {'latency_s': {'median': 2.8}},
        'segformer-b0-cl': {'latency_s': {'median': 1.0}}}}}
    fake['other_allocators'] = {'keep': {'settings': {'allocator': 'keep'}, 'results': {size: {
        'equiseg-b0': {'latency_s': {'median': 3.0}},
        'segformer-b0-cl': {'latency_s': {'median': 1.0}}}}}}
    checks = bench.check_target(fake)
    assert [(c['allocator'], c['met']) for c in checks] == [('default', True), ('keep', False)]
    assert checks[0]['ratio'] == pytest.approx(2.8)


def test_compile_rows_time_the_compiled_callable(bench, monkeypatch):
    compiled = []

    class Compiled:  # like torch's OptimizedModule: callable, refuses truth tests
        def __init__(self, module):
            self.module = module

        def __call__(self, *args):
            return self.module(*args)

        def __len__(self):
            raise TypeError('no len()')

    def fake_compile(module):
        compiled.append(module)
        return Compiled(module)
    monkeypatch.setattr(bench.torch, 'compile', fake_compile)
    result = bench.main(['--quick', '--models', 'segformer-b0-cl', 'segformer-b0', '--threads',
                         '1', '--no-memory', '--data-samples', '0', '--compile'])
    per_model = result['results']['64']
    assert list(per_model) == ['segformer-b0-cl', 'segformer-b0', 'segformer-b0-cl+compile']
    assert len(compiled) == 1  # segformer-b0 is not in COMPILABLE
    row = per_model['segformer-b0-cl+compile']
    assert row['flops'] == per_model['segformer-b0-cl']['flops'] and 'first_s' in row['latency_s']
    assert 'train_iter_s' not in row and 'train_iter_s' in per_model['segformer-b0-cl']


def test_peak_memory_subprocess(bench):
    mem = bench.measure_peak_memory('segformer-b0-fast', 64, threads=1, device='cpu')
    assert mem['peak_bytes'] > 0 and 'method' in mem


def test_get_flops_parts_and_counted_attention(capsys):
    flops = _load('get_flops')
    info = flops.main([osp.join(osp.dirname(TOOLS), 'configs', 'equiseg',
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


def test_baselines_differ_only_in_their_speed_switches(bench):
    stock, fast, cl, fh = (bench.build_model(n) for n in
                           ('segformer-b0', 'segformer-b0-fast', 'segformer-b0-cl',
                            'segformer-b0-fh'))
    assert [type(m.decode_head).__name__ for m in (stock, fast, cl, fh)] == \
        ['SegformerHead'] * 3 + ['FastSegformerHead']
    attn = [m.backbone.layers[0][1][0].attn for m in (stock, fast, cl)]
    assert [type(a.attn).__name__ for a in attn] == [
        'MultiheadAttention', '_NoWeightsMultiheadAttention', '_NoWeightsMultiheadAttention']
    assert [type(m.backbone).__name__ for m in (stock, fast, cl)] == [
        'MixVisionTransformer', 'MixVisionTransformer', '_ChannelsLastMixVisionTransformer']
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = [m(x, mode='tensor') for m in (stock, fast, cl, fh)]
    for out in outs[1:]:
        assert torch.allclose(outs[0], out, atol=1e-5)


def test_equiseg_variants_build_what_they_name(bench):
    """The stock-head variant predicts what the shipped model predicts; the light and paper
    variants build the necks they name."""
    shipped, stock, light, paper = (bench.build_model(n) for n in (
        'equiseg-b0', 'equiseg-b0-stockhead', 'equiseg-b0-light', 'equiseg-b0-paper'))
    assert (type(shipped.decode_head).__name__, type(stock.decode_head).__name__) == \
        ('FastSegformerHead', 'SegformerHead')
    x = torch.randn(1, 12, 64, 64)
    with torch.no_grad():
        assert torch.allclose(shipped(x, mode='tensor'), stock(x, mode='tensor'), atol=1e-4)
    assert light.neck.self_attn == [False] * 4 and \
        light.neck.stages[0][0].cross_attn.kv_grid == 8
    assert paper.neck.self_attn == [True] * 4 and paper.neck.aux_summary == 'per_primary'


KEEP_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {tools!r})
import benchmark
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def loop():  # 64 MB buffers allocated, written and freed; page faults counted
    start = faults()
    for _ in range(5):
        torch.ones(16 * 2**20)
    return faults() - start
default = loop()  # glibc's defaults first, then the same loop after keep_freed_memory()
kept = benchmark.keep_freed_memory()
torch.ones(16 * 2**20)  # 64 MB once, so the heap has grown when keeping
print(kept, default, loop())
"""


def _thp_always():
    try:
        with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
            return '[always]' in f.read()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc' or _thp_always(),
                    reason='needs glibc and 4-KiB page faults (transparent huge pages not '
                    '"always")')
def test_malloc_keep_stops_page_faulting_large_buffers_again(tmp_path):
    """Without it every freed 64 MB buffer is faulted in again (16384 4-KiB pages each); with
    it the memory is reused."""
    script = tmp_path / 'keep.py'
    script.write_text(KEEP_SCRIPT.format(tools=osp.join(TOOLS, 'analysis_tools')))
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    # one process (its imports take seconds): the default loop runs before the switch
    kept, default, keep = subprocess.run([sys.executable, str(script)], capture_output=True,
                                         text=True, env=env, check=True).stdout.split()
    assert kept == 'True'
    assert int(default) >= 4 * 16384  # (nearly) every buffer faulted in again
    assert int(keep) <= 2 * 16384, (default, keep)  # reused (at most one more buffer's pages)
