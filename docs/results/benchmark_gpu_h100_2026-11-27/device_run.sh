#!/usr/bin/env bash
# Device check: benchmark GPU rows of the models of commit 2c27e05 (batch 1 and 8), AMP
# smoke training of the shipped config, then the multi-seed sweep of the shipped models.
set -u
T0=$(date +%s)
SWEEP_S=${1:-300}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || { echo pip failed; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi -L; nproc; lscpu | grep "Model name"
python3 -c "import torch, equiseg_mm, mmpretrain.models; print('torch', torch.__version__, torch.cuda.get_device_name(0))" 2>&1 | tail -2
python3 tools/make_synthetic_dataset.py --out /tmp/data/synthetic_deliver 2>&1 | tail -1
B=tools/analysis_tools/benchmark.py
timeout 150 python3 $B --device cuda --sizes 512 1024 --repeats 5 --warmup 2 --train-repeats 2 --no-memory \
  --data-samples 0 --models equiseg-b0 equiseg-b0-stockhead equiseg-b0-paper segformer-b0 segformer-b0-cl segformer-b0-fh earlyfusion-b0 \
  --out $OUT/bench_gpu.json > $OUT/bench_gpu.txt 2>&1; echo "bench rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $OUT/bench_gpu.txt | tail -32
timeout 60 python3 $B --device cuda --sizes 1024 --batch 8 --repeats 5 --warmup 2 --train-repeats 0 --no-memory \
  --data-samples 0 --models equiseg-b0 segformer-b0 segformer-b0-cl earlyfusion-b0 --out $OUT/bench_gpu_b8.json > $OUT/bench_gpu_b8.txt 2>&1
echo "bench b8 rc=$? at $(( $(date +%s) - T0 )) s"; grep -v -i warn $OUT/bench_gpu_b8.txt | tail -12
D=/tmp/data/synthetic_deliver
timeout 70 python3 tools/train.py configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py --amp \
  --work-dir /tmp/amp --cfg-options train_cfg.max_iters=20 train_cfg.val_interval=20 default_hooks.logger.interval=5 \
  model.data_preprocessor.modality_dropout=0.3 train_dataloader.dataset.data_root=$D \
  val_dataloader.dataset.data_root=$D test_dataloader.dataset.data_root=$D > $OUT/amp.log 2>&1
echo "amp rc=$? at $(( $(date +%s) - T0 )) s"; grep -E "Iter\(train\)|mIoU|Error|NaN|nan" $OUT/amp.log | tail -8 | cut -c1-250
C=configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py
N=configs/equiseg/equiseg-nosgm_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py
E=configs/baselines/earlyfusion_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py
M=model.data_preprocessor.modality_dropout=0.3
mkdir -p /tmp/sw
timeout $SWEEP_S python3 tools/sweep.py --variant equiseg-md0.0 $C --variant equiseg-nosgm-md0.0 $N --variant earlyfusion-md0.0 $E \
  --variant equiseg-md0.3 $C $M --variant equiseg-nosgm-md0.3 $N $M --variant earlyfusion-md0.3 $E $M \
  --seeds 0 1 2 --max-iters 400 --jobs 18 --work-dir /tmp/sw --data-root $D > $OUT/sweep.log 2>&1
echo "sweep rc=$? at $(( $(date +%s) - T0 )) s"; tail -40 $OUT/sweep.log
(cd /tmp/sw && find . -name result.json -o -name table.md -o -name results.json -o -name spec.json | tar czf $OUT/sweep.tgz -T -)
(cd /tmp/sw && tail -n 30 */seed*/console.log 2>/dev/null | grep -i -B2 -A8 "error\|Traceback" | head -30)
echo "total $(( $(date +%s) - T0 )) s"
