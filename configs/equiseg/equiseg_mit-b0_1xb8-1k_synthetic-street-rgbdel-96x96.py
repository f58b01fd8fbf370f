# EQUISeg-B0 on the second embedded synthetic task, the street scene (DeLiVER layout, RGB-D-E-L):
# RGB tells every class pair apart by day; depth, lidar and events repeat one pair's cue each and
# keep it at night and in fog. Write the data with
#   python tools/make_synthetic_dataset.py --scene street
# Everything else is the main job's config.
_base_ = './equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
data_root = 'data/synthetic_street'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
