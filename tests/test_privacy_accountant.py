"""The accountant against dp-accounting's own ledgers and the analytic Gaussian mechanism;
noise calibration; `fedmeta privacy`."""

import json
import math

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings, strategies as st

from fedmeta.cli import main
from fedmeta.privacy.accountant import epsilon, noise_multiplier_for
from test_cli import fedmeta


@pytest.mark.parametrize("name, ledger", [("rdp", RdpAccountant), ("pld", PLDAccountant)])
def test_epsilon_equals_dp_accounting_composing_the_same_rounds_one_by_one(name, ledger):
    accountant = ledger()
    event = dp_accounting.PoissonSampledDpEvent(0.02, dp_accounting.GaussianDpEvent(1.3))
    for _ in range(50):
        accountant.compose(event)
    assert epsilon(1.3, 0.02, 50, 1e-5, name) == pytest.approx(accountant.get_epsilon(1e-5),
                                                               rel=1e-9)


def test_one_full_round_is_the_analytic_gaussian_mechanism():
    """Balle & Wang 2018: the exact epsilon of one Gaussian mechanism; PLD is exact up to its
    discretization, RDP an upper bound."""
    exact = dp_accounting.get_epsilon_gaussian(2.0, 1e-5)
    assert epsilon(2.0, 1.0, 1, 1e-5, "pld") == pytest.approx(exact, rel=1e-3)
    assert epsilon(2.0, 1.0, 1, 1e-5, "rdp") > exact


@given(st.floats(0.5, 5.0), st.floats(1e-3, 0.5), st.integers(1, 500))
@settings(max_examples=25, deadline=None)
def test_epsilon_grows_with_rounds_and_sampling_and_falls_with_noise(sigma, q, rounds):
    base = epsilon(sigma, q, rounds, 1e-5)
    assert epsilon(sigma, q, rounds + 10, 1e-5) >= base
    assert epsilon(sigma, min(1.0, 2 * q), rounds, 1e-5) >= base
    assert epsilon(1.5 * sigma, q, rounds, 1e-5) <= base


def test_no_noise_is_no_privacy():
    assert math.isinf(epsilon(0.0, 0.1, 10, 1e-5))


def test_calibrated_noise_spends_the_target_and_no_more():
    sigma = noise_multiplier_for(2.0, 0.01, 1000, 1e-5)
    assert epsilon(sigma, 0.01, 1000, 1e-5) == pytest.approx(2.0, abs=1e-3)
    assert epsilon(sigma, 0.01, 1000, 1e-5) <= 2.0
    assert epsilon(0.99 * sigma, 0.01, 1000, 1e-5) > 2.0


def test_privacy_command_prints_epsilon_and_solves_for_noise():
    done = fedmeta("privacy", "--noise-multiplier", "1.0", "--sample-rate", "0.01",
                   "--rounds", "1000", "--delta", "1e-5", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epsilon"] == pytest.approx(epsilon(1.0, 0.01, 1000, 1e-5))
    solved = fedmeta("privacy", "--target-epsilon", "2", "--sample-rate", "0.01",
                     "--rounds", "1000", "--json")
    assert json.loads(solved.stdout)["noise_multiplier"] == pytest.approx(
        noise_multiplier_for(2.0, 0.01, 1000, 1e-5), rel=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--noise-multiplier", "1", "--sample-rate", "1.5", "--rounds", "3"], "--sample-rate"),
    (["--noise-multiplier", "-1", "--sample-rate", "0.1", "--rounds", "3"], "--noise-multiplier"),
    (["--target-epsilon", "0", "--sample-rate", "0.1", "--rounds", "3"], "--target-epsilon"),
    (["--noise-multiplier", "1", "--sample-rate", "0.1", "--rounds", "3", "--delta", "1"],
     "--delta"),
    (["--sample-rate", "0.1", "--rounds", "3"], "--noise-multiplier"),
])
def test_privacy_command_refuses_bad_input(args, message, capsys):
    try:  # in this process: a traceback would fail the test here
        code = main(["privacy", *args])
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err
