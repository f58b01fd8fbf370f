set -x
OLD="cd /work/old && PYTHONPATH=/work/old /work/main/.venv/bin/python tools/analysis_tools/benchmark.py --sizes 1024 --repeats 5 --warmup 1 --train-repeats 0 --no-memory --data-samples 0 --models equiseg-b0 segformer-b0-fh"
NEW="cd /work/main && .venv/bin/python tools/analysis_tools/benchmark.py configs/baselines/segformer_mit-b0_1xb8-1k_synthetic-rgb-96x96.py configs/equiseg/equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py --sizes 1024 --repeats 5 --warmup 1"
for i in 1 2; do
  bash -c "$OLD --out /tmp/bench_old$i.json"
  bash -c "$NEW --out /tmp/bench_new$i.json"
done
