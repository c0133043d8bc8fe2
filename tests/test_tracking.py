import torch

from saekit.training.tracking import FiringTracker


def test_dead_and_density_over_windows():
    t = FiringTracker(d_sae=3, window_tokens=100)
    t.update(torch.tensor([10, 0, 50]), 50, 50)
    torch.testing.assert_close(t.recent_density(), torch.tensor([0.2, 0.0, 1.0]))
    t.update(torch.tensor([0, 0, 25]), 50, 100)
    torch.testing.assert_close(t.recent_density(), torch.tensor([0.1, 0.0, 0.75]))
    assert t.dead(100).tolist() == [False, True, False]
    t.update(torch.tensor([0, 0, 1]), 60, 160)
    assert t.dead(160).tolist() == [True, True, False]  # feature 0 last fired at token 50
    t.revive(torch.tensor([1]), 160)
    assert t.dead(160).tolist() == [True, False, False]
    u = FiringTracker(d_sae=3, window_tokens=100)
    u.load_state(t.state())
    assert torch.equal(u.last_fired, t.last_fired) and u.counted_tokens == t.counted_tokens
