import pytest
import torch
import torch.nn.functional as F

from bnext.kd import gap_sensitive_kd, gap_weights, kd_loss, per_sample_kl, soft_target_cross_entropy


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 10, generator=g) * 3 for _ in range(3)]


def test_gap_weights_sum_to_one_per_sample(logits):
    s, t1, t2 = logits
    w = gap_weights(s, [t1, t2])
    assert w.shape == (8, 2)
    assert torch.allclose(w.sum(dim=1), torch.ones(8), atol=1e-6)
    assert (w > 0).all()


def test_gap_weights_follow_eq4(logits):
    s, t1, t2 = logits
    q = F.softmax(s, dim=1)
    ce1 = -(q * F.log_softmax(t1, dim=1)).sum(1)
    ce2 = -(q * F.log_softmax(t2, dim=1)).sum(1)
    sigma = torch.exp(ce1) / (torch.exp(ce1) + torch.exp(ce2))
    assert torch.allclose(gap_weights(s, [t1, t2])[:, 0], sigma, atol=1e-6)
    # a teacher far from the student gets the larger weight
    far = -s * 5
    assert (gap_weights(s, [s.clone(), far])[:, 1] > 0.5).all()


def test_one_teacher_reduces_to_standard_kd_exactly(logits):
    s, t, _ = logits
    for temp in (1.0, 4.0):
        assert torch.equal(gap_sensitive_kd(s, [t], temp), kd_loss(s, t, temp))


def test_kd_zero_when_student_equals_teacher(logits):
    s = logits[0]
    assert kd_loss(s, s.clone()).abs() < 1e-6
    assert gap_sensitive_kd(s, [s.clone(), s.clone()], 2.0).abs() < 1e-6


def test_kd_matches_kl_div_with_temperature(logits):
    s, t, _ = logits
    temp = 3.0
    ref = F.kl_div(F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1), reduction="batchmean",
                   log_target=True) * temp**2
    assert torch.allclose(kd_loss(s, t, temp), ref, atol=1e-6)
    assert torch.allclose(per_sample_kl(s, t, temp).mean() * temp**2, ref, atol=1e-6)


def test_ensemble_is_weighted_sum_with_detached_weights(logits):
    s, t1, t2 = logits
    s = s.clone().requires_grad_(True)
    w = gap_weights(s, [t1, t2])
    manual = (w[:, 0] * per_sample_kl(s, t1) + w[:, 1] * per_sample_kl(s, t2)).mean()
    loss = gap_sensitive_kd(s, [t1, t2])
    assert torch.allclose(loss, manual, atol=1e-6)
    (g1,) = torch.autograd.grad(loss, s)
    (g2,) = torch.autograd.grad(manual, s)
    assert torch.allclose(g1, g2, atol=1e-6)  # no gradient through the weights
    mean = gap_sensitive_kd(s, [t1, t2], ensemble="mean")
    assert torch.allclose(mean, (per_sample_kl(s, t1) + per_sample_kl(s, t2)).mean() / 2, atol=1e-6)


def test_hard_label_term_and_soft_targets(logits):
    s, t, _ = logits
    y = torch.arange(8) % 10
    assert torch.allclose(kd_loss(s, t, targets=y, hard_weight=0.5), kd_loss(s, t) + 0.5 * F.cross_entropy(s, y))
    onehot = F.one_hot(y, 10).float()
    assert torch.allclose(soft_target_cross_entropy(s, onehot), F.cross_entropy(s, y), atol=1e-6)
    mixed = 0.7 * onehot + 0.3 * F.one_hot((y + 1) % 10, 10).float()
    assert torch.allclose(soft_target_cross_entropy(s, mixed), F.cross_entropy(s, mixed), atol=1e-6)
