import torch

from saekit.training.geometric_median import geometric_median


def test_matches_direct_minimisation():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(200, 5, generator=g)
    pts[:20] += 30  # outliers pull the mean, not the median
    y = pts.mean(0).clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        (pts - y).norm(dim=1).sum().backward()
        opt.step()
    torch.testing.assert_close(geometric_median(pts), y.detach(), atol=2e-2, rtol=0)


def test_collinear_points_give_the_middle_one():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    torch.testing.assert_close(geometric_median(pts), torch.tensor([1.0, 0.0]), atol=1e-3, rtol=0)
