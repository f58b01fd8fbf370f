"""Export -> onnxruntime -> parity on a tiny EQUISeg model, every modality subset.

One fixed-shape export (RGB-D-E-L, 48x64, logits, absent branches skipped) made by the documented
command of ``docs/en/user_guides/deploy.md`` (``tools/deployment/pytorch2onnx.py``'s ``main``
in this process), and one dynamic-shape export of an RGB-D model with a 1-channel depth.
"""
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

import equiseg_mm  # noqa: E402,F401,I001  (first: compat fixes, registration)
from equiseg_mm.apis import (evaluate_robustness, inference_multimodal,  # noqa: E402
                             init_multimodal_model)
from equiseg_mm.deploy import DeploySegmentor, ORTSegmentor, export_onnx, verify_onnx  # noqa: E402
from equiseg_mm.utils import modality_subsets, subset_name  # noqa: E402
from _synthetic_deliver import make_synthetic_deliver  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools')
BASE = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
OWN = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-20k_owndata-rgbd-512x512.py')
MODS = ['rgb', 'depth', 'event', 'lidar']
H, W = 48, 64
TINY = '''\
_base_ = [{base!r}]
dims = [8, 8, 8, 8]
heads = [1, 1, 1, 1]
model = dict(
    backbone=dict(embed_dims=8, num_layers=[1, 1, 1, 1], num_heads=heads),
    neck=dict(in_channels=dims, num_heads=heads),
    decode_head=dict(in_channels=dims, channels=16),
    auxiliary_head=dict(in_channels=dims))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root!r}))
'''


def _tool(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('_tool_' + re.sub(r'\W', '_', path),
                                                  osp.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _doc_export_command():
    """The export command of deploy.md, as a token list."""
    with open(osp.join(ROOT, 'docs', 'en', 'user_guides', 'deploy.md'), encoding='utf-8') as f:
        text = f.read()
    block = re.search(r'```bash\n(.*?)```', text[text.index('## Export'):], re.DOTALL).group(1)
    lines = [line for line in re.sub(r'\\\n\s*', ' ', block).splitlines()
             if line.strip() and not line.strip().startswith('#')]
    return shlex.split(lines[0])


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Tiny data, config, checkpoint, and the fixed-shape export of the documented command."""
    root = tmp_path_factory.mktemp('deploy')
    data = root / 'synthetic_deliver'
    make_synthetic_deliver(str(data), num_train=2, num_val=2, num_test=3, size=(H, W))
    config = root / 'tiny.py'
    config.write_text(TINY.format(base=BASE, data_root=str(data)))
    torch.manual_seed(0)
    model = init_multimodal_model(str(config))
    ckpt = root / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=model.dataset_meta)),
               ckpt)
    command = _doc_export_command()
    assert command[:2] == ['.venv/bin/python', 'tools/deployment/pytorch2onnx.py'], command
    assert '--shape' in command and '--verify' in command
    onnx_file = root / 'tiny.onnx'
    argv = [str(config), str(ckpt)] + command[4:]
    argv[argv.index('--output-file') + 1] = str(onnx_file)
    argv[argv.index('--shape') + 1:argv.index('--shape') + 3] = [str(H), str(W)]
    assert _tool('tools/deployment/pytorch2onnx.py').main(argv + ['--with-logits']) == 0
    frame = sorted((data / 'img').rglob('*_rgb_front.png'))[0]
    files = {'rgb': str(frame)}
    for name, folder in (('depth', 'hha'), ('event', 'event'), ('lidar', 'lidar')):
        files[name] = str(frame).replace(f'{os.sep}img{os.sep}', f'{os.sep}{folder}{os.sep}') \
            .replace('_rgb_front', f'_{name}_front')
    return dict(root=root, config=str(config), ckpt=str(ckpt), onnx=str(onnx_file),
                model=model, files=files)


def _frame(model, files):
    """The raw (C, H, W) arrays of a frame, as the loader produces them."""
    from equiseg_mm.datasets.transforms import LoadMultiModalImageFromFiles
    pre = model.data_preprocessor
    load = LoadMultiModalImageFromFiles(channels=dict(zip(pre.spec.names, pre.spec.channels)))
    img, _ = load.load_modalities(files, size_from='first')
    img = img.transpose(2, 0, 1).astype(np.float32)
    return {n: img[pre.spec.slices[n]] for n in pre.spec.names}


# --- the file -------------------------------------------------------------------------------
def test_exported_file_passes_the_checker_and_records_its_contract(world):
    model = onnx.load(world['onnx'])
    onnx.checker.check_model(model)
    assert {o.domain or 'ai.onnx': o.version for o in model.opset_import}['ai.onnx'] == 18
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == MODS + ['present']
    dims = [d.dim_value for d in inputs['rgb'].type.tensor_type.shape.dim]
    assert dims == [1, 3, H, W]
    assert inputs['present'].type.tensor_type.elem_type == onnx.TensorProto.BOOL
    assert [o.name for o in model.graph.output] == ['labels', 'logits']
    meta = json.loads({p.key: p.value for p in model.metadata_props}['equiseg_mm'])
    assert meta['modalities'] == MODS and meta['channels'] == [3, 3, 3, 3]
    assert meta['shape'] == [H, W] and meta['skip_absent'] is True and meta['opset'] == 18
    assert meta['bgr_to_rgb'] == MODS  # every 3-channel modality is flipped in the graph
    assert meta['dataset_meta']['classes'] == list(world['model'].dataset_meta['classes'])


def test_absent_branches_are_if_nodes_whose_else_branch_computes_nothing(world):
    graph = onnx.load(world['onnx']).graph
    ifs = [n for n in graph.node if n.op_type == 'If']
    assert len(ifs) == len(MODS)

    def ops(g):
        out = []
        for node in g.node:
            out.append(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    out += ops(attr.g)
        return out

    for node in ifs:
        branches = {a.name: a.g for a in node.attribute}
        assert 'Conv' in ops(branches['then_branch'])  # the branch: patch embeddings, ...
        assert not set(ops(branches['else_branch'])) & {'Conv', 'MatMul', 'Gemm'}


def test_absent_branch_does_not_run_in_onnxruntime(world, tmp_path):
    """onnxruntime's profile: two absent sensors run two branches' Conv kernels fewer."""

    def convs(present):
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(tmp_path / '_'.join(present))
        sess = ort.InferenceSession(world['onnx'], options, providers=['CPUExecutionProvider'])
        feeds = {m: np.zeros((1, 3, H, W), np.float32) for m in MODS}
        feeds['present'] = np.array([m in present for m in MODS])
        sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
        return sum(1 for e in events if e.get('cat') == 'Node'
                   and e.get('args', {}).get('op_name') == 'Conv'
                   and e['name'].endswith('_kernel_time'))

    full, half = convs(MODS), convs(['rgb', 'depth'])
    assert full > 0 and half < full
    per_branch = (full - half) / 2
    assert per_branch == int(per_branch) and convs(['rgb']) == full - 3 * per_branch


def test_stored_maps_are_the_branch_outputs_for_zeros_and_outputs_equal_running_it(world):
    model = world['model']
    skip = DeploySegmentor(model, shape=(H, W), with_logits=True).eval()
    run = DeploySegmentor(model, shape=(H, W), skip_absent=False, with_logits=True).eval()
    with torch.no_grad():
        for n, branch in enumerate(model.backbone.branches):
            outs = branch(torch.zeros(1, 3, H, W))
            for i, o in enumerate(outs):
                assert torch.equal(getattr(skip, f'zero_maps_{n}_{i}'), o)
        inputs = skip.example_inputs()
        present = torch.tensor([True, False, True, False])
        labels, logits = skip(*inputs[:-1], present)
        ref_labels, ref_logits = run(*inputs[:-1], present)
    assert torch.equal(labels, ref_labels) and torch.equal(logits, ref_logits)
    # and in onnxruntime, the skipping graph against the eager model that runs the branch
    ort_model = ORTSegmentor(world['onnx'], model.data_preprocessor)
    out = ort_model.run({m: x[0] for m, x in zip(MODS, inputs[:-1])}, ['rgb', 'event'])
    assert (out['labels'] == ref_labels.numpy()).mean() >= 0.999
    assert np.abs(out['logits'] - ref_logits.numpy()).max() < 1e-4


# --- parity ---------------------------------------------------------------------------------
def test_parity_on_every_modality_subset(world):
    model = world['model']
    rows = verify_onnx(model, world['onnx'], inputs=_frame(model, world['files']))
    assert [r['subset'] for r in rows] == [subset_name(s) for s in modality_subsets(MODS)]
    for row in rows:
        assert row['agreement'] >= 0.999, row
        assert row['max_logit_diff'] < 1e-4, row


def test_dynamic_shape_export_any_batch_and_size(tmp_path):
    """An RGB-D model with a 1-channel depth: the plain computation, sizes that are multiples
    of 64, a batch of two frames, absent modalities zeroed."""
    torch.manual_seed(0)
    dims = [8, 8, 8, 8]
    model = init_multimodal_model(OWN, cfg_options={
        'model.backbone.embed_dims': 8, 'model.backbone.num_layers': [1, 1, 1, 1],
        'model.backbone.num_heads': [1, 1, 1, 1], 'model.neck.in_channels': dims,
        'model.neck.num_heads': [1, 1, 1, 1], 'model.decode_head.in_channels': dims,
        'model.decode_head.channels': 16, 'model.auxiliary_head.in_channels': dims})
    path = str(tmp_path / 'dynamic.onnx')
    meta = export_onnx(model, path, shape=(128, 192), dynamic_shape=True, with_logits=True)
    assert meta['shape'] is None and meta['skip_absent'] is False and meta['batch'] is None
    assert meta['channels'] == [3, 1] and meta['bgr_to_rgb'] == ['rgb']
    for row in verify_onnx(model, path, shape=(192, 128)):  # export_onnx checked (192, 256)
        assert row['agreement'] >= 0.999 and row['max_logit_diff'] < 1e-4, row
    ort_model = ORTSegmentor(path, model.data_preprocessor)
    rng = np.random.default_rng(1)
    batch = {'rgb': rng.uniform(0, 255, (2, 3, 128, 128)).astype(np.float32),
             'depth': rng.uniform(0, 255, (2, 1, 128, 128)).astype(np.float32)}
    out = ort_model.run(batch, ['depth'])
    for b in range(2):
        one = ort_model.run({k: v[b] for k, v in batch.items()}, ['depth'])
        assert np.abs(out['logits'][b] - one['logits'][0]).max() < 1e-4
    with pytest.raises(ValueError, match='multiples of 64'):
        ort_model.run({'rgb': batch['rgb'][:, :, :100]})


# --- the inference API, tools/infer.py, the robustness test ---------------------------------
def test_inference_api_runs_the_file_as_the_checkpoint(world):
    eager = world['model']
    exported = init_multimodal_model(world['config'], world['onnx'])
    assert isinstance(exported, ORTSegmentor)
    assert exported.dataset_meta['classes'] == eager.dataset_meta['classes']
    files = dict(world['files'], event=None)
    del files['lidar']
    a = inference_multimodal(eager, files)
    b = inference_multimodal(exported, files)
    assert b.metainfo['missing_modalities'] == ('event', 'lidar')
    assert (a.pred_sem_seg.data == b.pred_sem_seg.data).float().mean() >= 0.999
    assert (a.seg_logits.data - b.seg_logits.data).abs().max() < 1e-4


def test_infer_tool_onnxruntime_writes_the_eager_label_png(world, tmp_path, capsys):
    """Two sensors absent (event and lidar flags left out): the same label PNG."""
    infer = _tool('tools/infer.py')
    files = world['files']
    common = ['--rgb', files['rgb'], '--depth', files['depth'], '--name', 'frame']
    assert infer.main([world['config'], world['ckpt'], '--out-dir', str(tmp_path / 'pt')]
                      + common) == 0
    assert infer.main([world['config'], world['onnx'], '--backend', 'onnxruntime',
                       '--out-dir', str(tmp_path / 'ort')] + common) == 0
    assert 'modalities missing (zeroed): event, lidar' in capsys.readouterr().out
    eager = cv2.imread(str(tmp_path / 'pt' / 'frame.png'), cv2.IMREAD_UNCHANGED)
    exported = cv2.imread(str(tmp_path / 'ort' / 'frame.png'), cv2.IMREAD_UNCHANGED)
    assert eager.shape == (H, W) and np.array_equal(eager, exported)
    # a backend that does not fit the file is an error naming it
    assert infer.main([world['config'], world['onnx'], '--backend', 'pytorch',
                       '--out-dir', str(tmp_path / 'x')] + common) == 1
    assert "use backend 'onnxruntime'" in capsys.readouterr().err


def test_robustness_test_of_the_file_writes_the_same_report(world, tmp_path):
    options = dict(rmm_ratios=(0.5, ), nm_densities=(0.1, ))
    eager = evaluate_robustness(world['config'], world['ckpt'], str(tmp_path / 'pt'), **options)
    exported = evaluate_robustness(world['config'], world['onnx'], str(tmp_path / 'ort'),
                                   **options)
    assert set(eager) == set(exported)
    assert len([k for k in eager if k.startswith('mm/mIoU/')]) == 14  # + the full set
    for key, value in eager.items():
        assert exported[key] == pytest.approx(value, abs=0.5, nan_ok=True), key
    for work in ('pt', 'ort'):
        reports = list((tmp_path / work).glob('*/robustness_report.*'))
        assert sorted(p.suffix for p in reports) == ['.json', '.md', '.png']


# --- errors ---------------------------------------------------------------------------------
def test_bad_inputs_are_errors_that_name_them(world):
    ort_model = ORTSegmentor(world['onnx'], world['model'].data_preprocessor)
    x = np.zeros((3, H, W), np.float32)
    with pytest.raises(ValueError, match=r"unknown modalities \['thermal'\]"):
        ort_model.run({'rgb': x, 'thermal': x})
    with pytest.raises(ValueError, match=r"unknown modalities \['radar'\]"):
        ort_model.run({'rgb': x}, ['rgb', 'radar'])
    with pytest.raises(ValueError, match="'depth' is marked present but has no input"):
        ort_model.run({'rgb': x}, ['rgb', 'depth'])
    with pytest.raises(ValueError, match='no modality is present'):
        ort_model.run({'rgb': x}, [])
    with pytest.raises(ValueError, match=r"input 'rgb': expected shape \(1, 3, 48, 64\).*"
                                         r'exported for this size'):
        ort_model.run({'rgb': np.zeros((3, 40, 64), np.float32)})
    with pytest.raises(ValueError, match=r"input 'depth': expected shape \(1, 3, 48, 64\)"):
        ort_model.run({'rgb': x, 'depth': np.zeros((1, H, W), np.float32)})
    with pytest.raises(ValueError, match='runs inference only'):
        ort_model(torch.zeros(1, 12, H, W), mode='loss')


def test_wrong_files_and_backends_are_errors(world, tmp_path):
    from mmengine.config import Config
    with pytest.raises(ValueError, match="runs a .onnx file"):
        init_multimodal_model(world['config'], world['ckpt'], backend='onnxruntime')
    with pytest.raises(ValueError, match='backend must be one of'):
        init_multimodal_model(world['config'], world['onnx'], backend='tensorrt')
    rgbd = Config.fromfile(OWN)
    with pytest.raises(ValueError, match=r"exported for modalities \['rgb', 'depth', 'event', "
                                         r"'lidar'\].*\['rgb', 'depth'\]"):
        init_multimodal_model(rgbd, world['onnx'])
    plain = tmp_path / 'plain.onnx'
    model = onnx.load(world['onnx'])
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    with pytest.raises(ValueError, match="no 'equiseg_mm' metadata"):
        ORTSegmentor(str(plain), world['model'].data_preprocessor)
    with pytest.raises(ValueError, match="device must be 'cpu'"):
        ORTSegmentor(world['onnx'], world['model'].data_preprocessor, device='tpu')
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        with pytest.raises(ValueError, match="needs onnxruntime's CUDAExecutionProvider"):
            ORTSegmentor(world['onnx'], world['model'].data_preprocessor, device='cuda:0')


def test_eager_deploy_segmentor_checks_its_arguments(world):
    deploy = DeploySegmentor(world['model'], shape=(H, W))
    xs = deploy.example_inputs()
    with pytest.raises(ValueError, match='expected 4 inputs'):
        deploy(*xs[:2], xs[-1])
    with pytest.raises(ValueError, match='present marks no modality'):
        deploy(*xs[:-1], torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"input 'depth': expected shape \(1, 3, 48, 64\)"):
        deploy(xs[0], xs[1][:, :, :8], *xs[2:])
    with pytest.raises(ValueError, match='skip_absent needs a fixed shape'):
        DeploySegmentor(world['model'], shape=None, skip_absent=True)
    with pytest.raises(ValueError, match='must name a .onnx file'):
        export_onnx(world['model'], 'model.bin', shape=(H, W))


def test_import_equiseg_mm_imports_no_onnx_package():
    code = ('import sys, equiseg_mm, equiseg_mm.deploy, equiseg_mm.apis\n'
            "loaded = [m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules]\n"
            'assert not loaded, loaded\n')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
