"""Privacy accounting with Google's `dp-accounting`: the (epsilon, delta) of T rounds of the
Poisson-subsampled Gaussian mechanism, the mechanism of DP-FedAvg (McMahan, Ramage, Talwar,
Zhang 2018, "Learning Differentially Private Recurrent Language Models") and of DP-SGD
(Abadi et al. 2016), by Rényi DP (Mironov 2017; Mironov, Talwar, Zhang 2019) or by privacy
loss distributions (Koskela, Jälkö, Honkela 2020; Doroshenko et al. 2022).

Each round samples each client with probability `sample_rate` (or, for fixed-size cohorts,
exactly `cohort` clients: `without_replacement_epsilon`), clips their updates to L2 norm
C and adds Gaussian noise of std `noise_multiplier * C` to their sum.
"""

import logging
from typing import Literal

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

AccountantName = Literal["rdp", "pld"]
# dp-accounting's RDP logs every Renyi order it cannot evaluate and drops (the bound stays
# valid); at small noise that is hundreds of lines a round.
logging.getLogger("absl").setLevel(logging.ERROR)


def round_event(noise_multiplier: float, sample_rate: float) -> dp_accounting.DpEvent:
    """One round: Poisson sampling at `sample_rate`, then the Gaussian mechanism."""
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    return gaussian if sample_rate >= 1 else dp_accounting.PoissonSampledDpEvent(sample_rate,
                                                                                 gaussian)


def make_accountant(name: AccountantName) -> dp_accounting.PrivacyAccountant:
    return RdpAccountant() if name == "rdp" else PLDAccountant()


def epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float,
            accountant: AccountantName = "rdp") -> float:
    """Epsilon at `delta` after `rounds` rounds (inf without noise)."""
    ledger = make_accountant(accountant)
    ledger.compose(round_event(noise_multiplier, sample_rate), rounds)
    return float(ledger.get_epsilon(delta))


def noise_multiplier_for(target_epsilon: float, sample_rate: float, rounds: int, delta: float,
                         accountant: AccountantName = "rdp") -> float:
    """The smallest noise multiplier whose `rounds` rounds spend at most `target_epsilon`."""
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: make_accountant(accountant),
        lambda sigma: dp_accounting.SelfComposedDpEvent(round_event(sigma, sample_rate), rounds),
        target_epsilon, delta))


def without_replacement_epsilon(noise_multiplier: float, sample_size: int, population: int,
                                steps: int, delta: float) -> float:
    """Epsilon at `delta` after `steps` Gaussian mechanisms on `sample_size` of `population`
    drawn without replacement (a fixed-size cohort, or a client's minibatch), under
    replace-one neighbours (Wang, Balle, Kasiviswanathan 2019), by RDP; inf without noise."""
    if noise_multiplier == 0:
        return float("inf")
    ledger = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    ledger.compose(dp_accounting.SampledWithoutReplacementDpEvent(
        population, min(sample_size, population),
        dp_accounting.GaussianDpEvent(noise_multiplier)), steps)
    return float(ledger.get_epsilon(delta))


class PrivacyBudget:
    """Epsilon after each round of a run, and whether a round stays within `target_epsilon`
    (0: no budget). Poisson sampling at `sample_rate`, or, given `fixed_cohort` =
    (cohort, clients), exactly that many clients a round (RDP, replace-one neighbours).
    Depends on the round count only, so a resumed run agrees."""

    def __init__(self, noise_multiplier: float, sample_rate: float, delta: float,
                 accountant: AccountantName = "rdp", target_epsilon: float = 0.0,
                 fixed_cohort: tuple[int, int] | None = None) -> None:
        self.noise_multiplier, self.sample_rate, self.delta = noise_multiplier, sample_rate, delta
        self.accountant, self.target_epsilon = accountant, target_epsilon
        self.fixed_cohort = fixed_cohort
        self._spent: dict[int, float] = {}

    def epsilon_after(self, rounds: int) -> float:
        if rounds not in self._spent:
            self._spent[rounds] = (
                without_replacement_epsilon(self.noise_multiplier, *self.fixed_cohort, rounds,
                                            self.delta) if self.fixed_cohort else
                epsilon(self.noise_multiplier, self.sample_rate, rounds, self.delta,
                        self.accountant))
        return self._spent[rounds]

    def allows(self, rounds: int) -> bool:
        return not self.target_epsilon or self.epsilon_after(rounds) <= self.target_epsilon
