"""tools/sweep.py: argument checks and the mean +- std table with its spread rule."""
import importlib.util
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location('_sweep', osp.join(ROOT, 'tools', 'sweep.py'))
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def _metrics(miou, emm):
    return {'mm/mIoU': miou, 'mm/EMM_avg': emm, 'mm/single/rgb': 1.0, 'mm/aAcc': 5.0}


def test_aggregate_and_table_mark_only_differences_beyond_the_spread():
    results = {
        'a': {0: _metrics(90.0, 40.0), 1: _metrics(92.0, 42.0)},
        'b': {0: _metrics(91.0, 50.0), 1: _metrics(93.0, 52.0)},
    }
    stats = sweep.aggregate(results)
    mean, std, n = stats['a']['mm/mIoU']
    assert (mean, n) == (91.0, 2) and std == pytest.approx(2 ** 0.5)
    assert list(stats['a']) == ['mm/mIoU', 'mm/EMM_avg', 'mm/single/rgb']  # no aAcc
    table = sweep.format_table(stats, reference='a')
    rows = {line.split('|')[1].strip(): line for line in table.splitlines() if line.count('|') > 2}
    assert '92.00 ± 1.41 |' in rows['mIoU'] and '*' not in rows['mIoU']  # 1.0 < 1.41 + 1.41
    assert '51.00 ± 1.41*' in rows['EMM_avg']  # 10 > 2.83
    assert 'a (2 seeds)' in table and 'b (2 seeds)' in table


def test_one_seed_has_zero_spread():
    stats = sweep.aggregate({'a': {0: _metrics(90.0, 40.0)}})
    assert stats['a']['mm/mIoU'] == (90.0, 0.0, 1)


def test_presets_and_variant_arguments():
    args = sweep.parse_args(['--preset', 'dropout', '--seeds', '0', '1'])
    names = [v[0] for v in args.variants]
    assert len(names) == 12 and 'equiseg-md0.3' in names and 'earlyfusion-md0.0' in names
    rates = {v[0]: v[2]['model.data_preprocessor.modality_dropout'] for v in args.variants}
    assert rates['equiseg-nosgm-md0.15'] == 0.15
    config = sweep.SYNTHETIC
    args = sweep.parse_args(['--variant', 'x', config, 'model.neck.cross_sr_ratios=None',
                             'a.b=[1,2]'])
    assert args.variants == [('x', config, {'model.neck.cross_sr_ratios': None, 'a.b': [1, 2]})]


def test_defaults_preset_and_scene():
    args = sweep.parse_args(['--preset', 'defaults', '--scene', 'street'])
    variants = {v[0]: v for v in args.variants}
    assert args.data_root == 'data/synthetic_street'
    assert args.work_dir == osp.join('work_dirs', 'sweep_defaults_street')
    assert variants['paper'][1] == sweep.PAPERNECK and variants['shipped'][1] == sweep.SYNTHETIC
    assert variants['paper-nosgm'][2] == {'model.auxiliary_head': None}
    assert 'shipped-md0.15' in variants
    assert variants['paper-mdpm'][2]['model.data_preprocessor.modality_dropout']['rgb'] == 0.3
    args = sweep.parse_args(['--preset', 'defaults'])
    assert args.data_root == 'data/synthetic_deliver'
    assert args.work_dir == osp.join('work_dirs', 'sweep_defaults')


def test_tuple_options_survive_the_spec_round_trip(tmp_path, monkeypatch):
    """A finished run is recognised although its spec.json turned tuples into lists."""
    import json
    spec = dict(name='x', work_dir=str(tmp_path), cfg_options={'crop_size': (64, 64)})
    spec = json.loads(json.dumps(spec))  # what main() does before writing spec.json
    (tmp_path / 'result.json').write_text(json.dumps(dict(spec=spec, metrics={'mm/mIoU': 1.0})))
    assert sweep._load_done(spec)['metrics'] == {'mm/mIoU': 1.0}


@pytest.mark.parametrize('argv, message', [
    ([], 'give --preset'),
    (['--variant', 'x'], 'NAME CONFIG'),
    (['--variant', 'x', 'missing.py'], 'does not exist'),
    (['--variant', 'x', sweep.SYNTHETIC, 'novalue'], 'KEY=VALUE'),
    (['--variant', 'x', sweep.SYNTHETIC, '--variant', 'x', sweep.SYNTHETIC], 'unique'),
    (['--preset', 'demo', '--jobs', '0'], 'jobs'),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        sweep.parse_args(argv)
    assert message in capsys.readouterr().err
