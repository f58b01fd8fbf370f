"""tools/_complexity.py: the FLOP handles added to mmengine's counter."""
import torch
import torch.nn.functional as F

from _complexity import flop_analyzer


def test_sdpa_handle_counts_both_products():
    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 5)
    analyzer = flop_analyzer(Attn(), (q, k, v))
    assert analyzer.total() == 2 * 3 * 10 * 6 * (4 + 5)


def test_avg_pool_handle_counts_kernel_area_per_output():
    class Pool(torch.nn.Module):
        def forward(self, x):
            return F.avg_pool2d(x, (3, 5), stride=1, padding=(1, 2))

    x = torch.randn(1, 2, 7, 9)
    assert flop_analyzer(Pool(), (x, )).total() == 2 * 7 * 9 * 3 * 5
