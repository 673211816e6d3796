"""Sampler labels with their math, alike for the book's tables (MyST) and legends (matplotlib)."""

SIGMA_LABELS = {"beta": "sigma^2 = beta", "posterior": "sigma^2 = beta_tilde"}  # DDPM.sample's sigma as text
MATH_LABELS = {"sigma^2 = beta_tilde": r"$\sigma^2 = \tilde\beta$", "sigma^2 = beta": r"$\sigma^2 = \beta$",
               "eta = 0": r"$\eta = 0$"}  # the labels' plain parts and their math, the longest first


def typeset(label):
    """A sampler's label with sigma^2 and eta written as math."""
    for plain, math in MATH_LABELS.items():
        label = label.replace(plain, math)
    return label
