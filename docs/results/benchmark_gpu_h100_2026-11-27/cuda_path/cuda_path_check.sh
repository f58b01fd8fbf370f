#!/usr/bin/env bash
# Device check 2: the user-facing CUDA path end to end: train (AMP) -> checkpoint -> tools/test.py
# (missing-modality robustness loop) -> tools/infer.py with two dead sensors -> panels.
set -u
T0=$(date +%s)
DEV=${1:-cuda}
AMP=${2---amp}
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || { echo pip failed; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD; PY=python3
else
  export PYTHONPATH=$PWD; PY=${PY:-/tmp/venv_probe/bin/python}
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
O=${OUT:-/tmp/p17/out}; mkdir -p $O
D=/tmp/g2/data; W=/tmp/g2/work
$PY tools/make_synthetic_dataset.py --out $D 2>&1 | tail -1
C=configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py
R="train_dataloader.dataset.data_root=$D val_dataloader.dataset.data_root=$D test_dataloader.dataset.data_root=$D"
timeout 120 $PY tools/train.py $C $AMP --work-dir $W --cfg-options train_cfg.max_iters=20 train_cfg.val_interval=20 \
  default_hooks.checkpoint.interval=20 default_hooks.logger.interval=10 $R > $O/train.log 2>&1
echo "train rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "Iter\(train\)" $O/train.log | cut -c1-200; ls $W/*.pth
timeout 120 $PY tools/test.py $C $W/iter_20.pth --work-dir $W/test --cfg-options $R > $O/test.log 2>&1
echo "test rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "EMM|mIoU|Error|device|cuda" $O/test.log | tail -6 | cut -c1-250
F=$(ls $D/img/sun/test/seq06/*_rgb_front.png | head -1); G=$(ls $D/hha/sun/test/seq06/*.png | head -1)
ls $F $G
timeout 60 $PY tools/infer.py $C $W/iter_20.pth --rgb $F --depth $G --device $DEV --out-dir $O/infer > $O/infer.log 2>&1
echo "infer rc=$? at $(( $(date +%s) - T0 )) s"; tail -5 $O/infer.log | cut -c1-250; ls $O/infer
timeout 90 $PY tools/visualize_modalities.py $C $W/iter_20.pth --num-samples 1 --device $DEV --data-root $D --out-dir $O/panels > $O/vis.log 2>&1
echo "vis rc=$? at $(( $(date +%s) - T0 )) s"; tail -3 $O/vis.log | cut -c1-250; ls $O/panels
$PY - <<'PY'
import torch
from equiseg_mm.apis import init_multimodal_model
m = init_multimodal_model('configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py', '/tmp/g2/work/iter_20.pth', device='cuda' if torch.cuda.is_available() else 'cpu')
print('model device', next(m.parameters()).device, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')
PY
echo "total $(( $(date +%s) - T0 )) s"
