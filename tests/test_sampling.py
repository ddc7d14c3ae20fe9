import torch
from hypothesis import given, settings, strategies as st

from fedmeta.engine.sampling import poisson_cohort, uniform_cohort
from fedmeta.seeding import seeded


@given(st.integers(1, 5000), st.integers(1, 300), st.integers(0, 2**32))
@settings(max_examples=50, deadline=None)
def test_uniform_cohort_is_distinct_in_range_and_deterministic(n, size, seed):
    cohort = uniform_cohort(n, size, seeded(seed))
    assert len(cohort) == min(n, size)
    assert len(set(cohort.tolist())) == len(cohort)
    assert 0 <= cohort.min() and cohort.max() < n
    assert torch.equal(cohort, uniform_cohort(n, size, seeded(seed)))


def test_poisson_cohort_rate():
    n, q, draws = 2000, 0.05, 200
    sizes = torch.tensor([len(poisson_cohort(n, q, seeded(0, r))) for r in range(draws)],
                         dtype=torch.float64)
    # Binomial(n, q): mean nq = 100, std sqrt(nq(1-q)) ~ 9.7; the mean of 200 draws within 5 SE.
    assert abs(sizes.mean() - n * q) < 5 * (n * q * (1 - q) / draws) ** 0.5
    assert abs(sizes.std() - (n * q * (1 - q)) ** 0.5) < 2.5


def test_seeded_streams_differ_and_repeat():
    a, b = torch.rand(4, generator=seeded(1, 2, 3)), torch.rand(4, generator=seeded(1, 2, 4))
    assert not torch.equal(a, b)
    assert torch.equal(a, torch.rand(4, generator=seeded(1, 2, 3)))


def test_uniform_cohort_includes_every_client_equally_often():
    n, size, draws = 20, 5, 4000
    counts = torch.zeros(n)
    for r in range(draws):
        counts[uniform_cohort(n, size, seeded(3, r))] += 1
    expected = draws * size / n  # 1000; binomial std ~ 27
    assert (counts - expected).abs().max() < 5 * (expected * (1 - size / n)) ** 0.5


def test_poisson_cohort_includes_every_client_with_the_rate():
    n, q, draws = 50, 0.1, 4000
    counts = torch.zeros(n)
    for r in range(draws):
        counts[poisson_cohort(n, q, seeded(4, r))] += 1
    assert (counts - draws * q).abs().max() < 5 * (draws * q * (1 - q)) ** 0.5
