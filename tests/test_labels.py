"""Sampler labels with their math (dgm.labels)."""

from dgm.labels import typeset


def test_typeset_writes_sigma_and_eta_as_math():
    assert typeset("ancestral, sigma^2 = beta_tilde") == r"ancestral, $\sigma^2 = \tilde\beta$"
    assert typeset("ancestral, sigma^2 = beta") == r"ancestral, $\sigma^2 = \beta$"
    assert typeset("DDIM (eta = 0)") == r"DDIM ($\eta = 0$)"
    assert typeset("reverse SDE") == "reverse SDE"
