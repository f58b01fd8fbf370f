"""The robustness report renderer on a hand-made summary: JSON (NaN -> null), Markdown, PNG."""
import json
import math

import equiseg_mm  # noqa: F401  (compat fixes first)

from equiseg_mm.visualization import write_robustness_report


def _summary(with_contributions=True):
    nan = float('nan')
    emm = {'full': dict(mIoU=80.0, aAcc=90.0, num_samples=2, num_modalities=2,
                        IoU={'road': 90.0, 'sky': 70.0, 'car': nan})}
    figures = {'mIoU': 80.0, 'aAcc': 90.0}
    if with_contributions:
        emm['rgb'] = dict(mIoU=50.0, aAcc=60.0, num_samples=2, num_modalities=1,
                          IoU={'road': 60.0, 'sky': 40.0, 'car': nan})
        emm['depth'] = dict(mIoU=nan, aAcc=nan, num_samples=2, num_modalities=1,
                            IoU={'road': nan, 'sky': nan, 'car': nan})
        figures.update({'EMM_avg': 65.0, 'delta/rgb': nan, 'delta/depth': 30.0,
                        'single/rgb': 50.0, 'balance_cv': 0.12345})
    return dict(modalities=['rgb', 'depth'], classes=['road', 'sky', 'car'], figures=figures,
                settings={'EMM': emm}, groups={'condition': {'night': dict(
                    mIoU=75.0, aAcc=88.0, num_samples=1)}},
                definitions={'EMM_avg': 'mean mIoU over the subsets'})


def test_writes_json_markdown_and_png(tmp_path):
    paths = write_robustness_report(_summary(), str(tmp_path / 'new' / 'dir'))
    assert [p.rsplit('/', 1)[1] for p in paths] == [
        'robustness_report.json', 'robustness_report.md', 'robustness_report.png']
    with open(paths[0]) as f:
        rep = json.load(f)  # standard JSON: NaN became null
    assert rep['figures']['delta/rgb'] is None and rep['figures']['delta/depth'] == 30.0
    assert rep['settings']['EMM']['full']['IoU']['car'] is None
    md = open(paths[1]).read()
    assert '| balance_cv | 0.1235 |' in md and '| EMM_avg | 65.00 |' in md
    # subsets sorted by EMM mIoU, NaN last
    assert md.index('| full | 2 | 80.00 |') < md.index('| rgb | 1 | 50.00 |') \
        < md.index('| depth | 1 | - |')
    assert '| rgb | - | 50.00 |' in md and '| depth | 30.00 | - |' in md
    assert '| condition | night | 1 | 75.00 | 88.00 |' in md
    assert '| car | - |' in md and '- `EMM_avg`: mean mIoU over the subsets' in md
    assert open(paths[2], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_full_set_only(tmp_path):
    paths = write_robustness_report(_summary(with_contributions=False), str(tmp_path))
    md = open(paths[1]).read()
    assert 'Modality contributions' not in md and '| full | 2 | 80.00 |' in md
    assert open(paths[2], 'rb').read(4) == b'\x89PNG'
    assert not math.isnan(json.load(open(paths[0]))['figures']['mIoU'])
