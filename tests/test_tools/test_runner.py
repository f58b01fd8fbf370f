"""``tools/_runner.py``: schedule scaling and panel selection, the demo's and the sweep's unit of
work."""
from _runner import scale_schedule, spread_indices
from mmengine.config import Config


class _Infos:

    def __init__(self, infos):
        self.infos = infos

    def __len__(self):
        return len(self.infos)

    def get_data_info(self, idx):
        return self.infos[idx]


def test_spread_indices_covers_conditions_clean_first():
    infos = ([dict(condition='fog', case='underexposure')] * 2 + [dict(condition='fog',
                                                                        case='clean')] * 2 +
             [dict(condition='night', case='motionblur')] * 2 +
             [dict(condition='night', case='clean')] + [dict(condition='sun', case='clean')])
    picked = spread_indices(_Infos(infos), 4)
    assert picked == [2, 6, 7, 0]  # the clean frame of each condition, then a failure case
    assert spread_indices(_Infos(infos), 10) == [2, 6, 7, 0, 4]  # every group once


def test_spread_indices_without_metadata_is_evenly_spaced():
    assert spread_indices(_Infos([{}] * 12), 4) == [0, 3, 6, 9]


def test_scale_schedule_stretches_warmup_and_decay():
    cfg = Config(dict(
        train_cfg=dict(max_iters=1000, val_interval=1000),
        param_scheduler=[dict(type='LinearLR', begin=0, end=50, by_epoch=False),
                         dict(type='PolyLR', begin=50, end=1000, by_epoch=False),
                         dict(type='StepLR', begin=0, end=3, step_size=1)]))  # epoch-based
    scale_schedule(cfg, 400)
    assert cfg.train_cfg.max_iters == 400 and cfg.train_cfg.val_interval == 400
    assert [(s['begin'], s['end']) for s in cfg.param_scheduler] == [(0, 20), (20, 400), (0, 3)]
    single = Config(dict(train_cfg=dict(max_iters=100, val_interval=100),
                         param_scheduler=dict(type='PolyLR', begin=0, end=100, by_epoch=False)))
    scale_schedule(single, 10)  # one scheduler as a dict, as mmengine allows
    assert (single.param_scheduler['begin'], single.param_scheduler['end']) == (0, 10)
