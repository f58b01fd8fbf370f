"""onnxruntime latency of EQUISeg-B0's graph exported with the fast path on and off, 512x512.

    EQUISEG_COMPAT=all .venv/bin/python docs/results/deploy_cpu/fastpath_probe.py 512

Exports the synthetic RGB-D-E-L config's model (random weights, seed 0) twice at a fixed shape
through ``DeploySegmentor`` as configured (``model.fast_path`` True / False) and times
``ORTSegmentor.run`` (2 threads) with 4 and 2 sensors present, 3 runs each after one warm-up.
``export_onnx`` exports the plain computation; this probe bypasses it for the fast one.
"""
import sys, time, copy, statistics, json
import numpy as np, torch
import equiseg_mm
from equiseg_mm.apis import init_multimodal_model
from equiseg_mm.deploy import ORTSegmentor, export_onnx
from equiseg_mm.deploy import onnx_export
CONFIG='configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
S=int(sys.argv[1]) if len(sys.argv)>1 else 512
torch.set_num_threads(2)
res={}
for fp in (True, False):
    torch.manual_seed(0)
    model = init_multimodal_model(CONFIG, cfg_options={'model.fast_path': fp})
    f=f'/tmp/proto/b0_{S}_{"fast" if fp else "plain"}.onnx'
    # export_onnx exports the plain copy; keep the configured path for this comparison
    onnx_export._plain_copy = (lambda m: m)
    meta=export_onnx(model, f, shape=(S,S))
    print('export', fp, meta['export_s'], flush=True)
    ort_model=ORTSegmentor(f, copy.deepcopy(model.data_preprocessor), threads=2)
    rng=np.random.default_rng(0)
    x={n: rng.uniform(0,255,(3,S,S)).astype(np.float32) for n in ort_model.modalities}
    for present in (['rgb','depth','event','lidar'], ['rgb','depth']):
        ort_model.run(x, present)
        ts=[]
        for _ in range(3):
            t=time.perf_counter(); ort_model.run(x, present); ts.append(time.perf_counter()-t)
        res[(fp, len(present))]=statistics.median(ts)
        print(fp, present, ts, flush=True)
print(res)
