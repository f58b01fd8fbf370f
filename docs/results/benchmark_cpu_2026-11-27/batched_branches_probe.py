"""Would batching the four branches help? Stage-1 MixFFN (the branch's largest conv work) and
stage-1 attention of 4 MiT-B0 branches at 1024^2: sequential modules vs one grouped computation."""
import sys, time, statistics, torch, torch.nn.functional as F
import os.path as osp  # noqa: E402
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..', '..'))
import equiseg_mm
from equiseg_mm.models.backbones import MultiModalMiT
from equiseg_mm.models.utils.fast_mit import nlc_to_nchw_cl
torch.set_num_threads(2)  # as tools/analysis_tools/benchmark.py
def t(f, n=7):
    f(); f(); r = []
    for _ in range(n):
        s = time.perf_counter(); f(); r.append(time.perf_counter() - s)
    return statistics.median(r) * 1000, min(r) * 1000
bb = MultiModalMiT(['a', 'b', 'c', 'd'], embed_dims=32, num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8]).eval()
ffns = [b.layers[0][1][0].ffn for b in bb.branches]
attns = [b.layers[0][1][0].attn for b in bb.branches]
H = 256; hw = (H, H)
xs = [torch.randn(1, H * H, 32) for _ in range(4)]
W1 = torch.cat([f.layers[0].weight for f in ffns]); B1 = torch.cat([f.layers[0].bias for f in ffns])
WD = torch.cat([f.layers[1].weight for f in ffns]); BD = torch.cat([f.layers[1].bias for f in ffns])
W2 = torch.cat([f.layers[4].weight for f in ffns]); B2 = torch.cat([f.layers[4].bias for f in ffns])
def ffn_seq():
    return [f(x, hw) for f, x in zip(ffns, xs)]
def ffn_grouped():
    x = torch.stack(xs, 2).view(1, H, H, 4 * 32).permute(0, 3, 1, 2)  # (1, 4C, H, W) channels-last
    y = F.conv2d(x, W1, B1, groups=4); y = F.conv2d(y, WD, BD, padding=1, groups=4 * 128)
    y = F.gelu(y); y = F.conv2d(y, W2, B2, groups=4)
    y = y.permute(0, 2, 3, 1).reshape(1, H * H, 4, 32)
    return [xs[i] + y[:, :, i] for i in range(4)]
with torch.no_grad():
    a = ffn_seq(); b = ffn_grouped()
    print('max diff', max((p - q).abs().max().item() for p, q in zip(a, b)))
    print('MixFFN stage 1, 4 branches: sequential %.0f ms (min %.0f), grouped %.0f ms (min %.0f)' % (*t(ffn_seq), *t(ffn_grouped)))
    q = torch.randn(1, 1, H * H, 32); k = torch.randn(1, 1, 1024, 32)
    q4 = torch.randn(4, 1, H * H, 32); k4 = torch.randn(4, 1, 1024, 32)
    print('SDPA stage 1: 4 x batch-1 %.0f ms, one batch-4 call %.0f ms' % (
        4 * t(lambda: F.scaled_dot_product_attention(q, k, k))[0], t(lambda: F.scaled_dot_product_attention(q4, k4, k4))[0]))
