"""The toy ablation: every sampler with the exact predictor against p_0, error against steps."""

import numpy as np
import pytest
import scipy.stats
import torch

from dgm import GaussianMixture1D
from dgm import toy_ablation
from dgm.mixture import toy_mixture

SAMPLERS = tuple(toy_ablation.DDPM_SAMPLERS) + toy_ablation.SDE_SAMPLERS


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_with_all_steps_matches_p0(sampler):
    """Statistical test at a fixed seed, with a power check: a 0.05 shift of the means is detected."""
    mixture = toy_mixture()
    samples = toy_ablation.draw(mixture, sampler, T=1000, steps=1000, n=20_000, seed=7)
    assert scipy.stats.kstest(samples, mixture.cdf).pvalue > 1e-3
    shifted = GaussianMixture1D(mixture.weights, mixture.means + 0.05, mixture.stds)
    assert scipy.stats.kstest(samples, shifted.cdf).pvalue < 1e-6


def test_error_does_not_grow_with_more_steps():
    result = toy_ablation.run_toy_ablation(n=10_000, timesteps=(1000,), step_counts=(10, 50), seeds=1, floor_repeats=5,
                              progress=False)
    noise = 3 * result["floor"]["wasserstein"]["std"] + 0.1 * result["floor"]["wasserstein"]["mean"]
    for sampler in SAMPLERS:
        errors = [row["wasserstein"] for row in result["rows"] if row["sampler"] == sampler]
        assert [row["steps"] for row in result["rows"] if row["sampler"] == sampler] == [10, 50, 1000]
        assert all(later <= earlier + noise for earlier, later in zip(errors, errors[1:])), (sampler, errors)
    # and ten steps are visibly worse than a thousand for the stochastic samplers
    for sampler in ("ancestral, sigma^2 = beta", "reverse SDE"):
        errors = [row["wasserstein"] for row in result["rows"] if row["sampler"] == sampler]
        assert errors[0] > errors[-1] + noise


def test_short_chains_start_further_from_the_prior():
    mismatch = {entry["T"]: entry for entry in
                (toy_ablation.prior_mismatch(toy_mixture(), T) for T in (500, 1000, 2000))}
    assert mismatch[500]["alpha_bar_T"] > mismatch[1000]["alpha_bar_T"] > mismatch[2000]["alpha_bar_T"]
    assert mismatch[500]["ks_q_T_vs_prior"] > mismatch[1000]["ks_q_T_vs_prior"] > 0


def test_cli_quick_run_writes_json_and_csv(tmp_path, monkeypatch):
    calls, full_run = {}, toy_ablation.run_toy_ablation

    def small_run(n, seed, seeds, **resume):
        calls["n"] = n
        return full_run(n, timesteps=(500,), step_counts=(10,), samplers=("DDIM (eta = 0)",),
                        seed=seed, seeds=seeds, floor_repeats=2, progress=False, **resume)

    monkeypatch.setattr(toy_ablation, "run_toy_ablation", small_run)
    out = tmp_path / "toy.json"
    toy_ablation.main(["--quick", "--out", str(out)])
    assert calls["n"] == toy_ablation.QUICK_N
    rows = toy_ablation.json.loads(out.read_text())["rows"]
    assert [(row["T"], row["steps"]) for row in rows] == [(500, 10), (500, 500)]
    header = out.with_suffix(".csv").read_text().splitlines()[0]
    assert header == "T,sampler,steps,wasserstein,wasserstein_std,ks,ks_std,seconds"
    # The same draws again differ only in their timings: the report stays as it was, byte for byte (git and the
    # book's execution cache see no change).
    written = {path: path.read_bytes() for path in (out, out.with_suffix(".csv"))}
    timed = {**toy_ablation.json.loads(out.read_text())}
    timed["rows"] = [{**row, "seconds": row["seconds"] + 1} for row in timed["rows"]]
    monkeypatch.setattr(toy_ablation, "run_toy_ablation", lambda n, seed, seeds, **resume: timed)
    toy_ablation.main(["--quick", "--out", str(out)])
    assert {path: path.read_bytes() for path in written} == written


def test_the_deterministic_samplers_are_samplers_of_the_grid():
    """The book's verdicts split the grid's samplers by this list; a renamed sampler must not drop out of it."""
    grid = set(toy_ablation.DDPM_SAMPLERS) | set(toy_ablation.SDE_SAMPLERS)
    assert set(toy_ablation.DETERMINISTIC_SAMPLERS) < grid


def test_seeds_give_mean_and_spread(tmp_path, monkeypatch):
    full_run = toy_ablation.run_toy_ablation
    monkeypatch.setattr(toy_ablation, "run_toy_ablation", lambda n, seed, seeds, **resume: full_run(
        200, timesteps=(500,), step_counts=(), samplers=("DDIM (eta = 0)",), seed=seed, seeds=seeds,
        floor_repeats=2, progress=False))
    out = tmp_path / "seeds.json"
    toy_ablation.main(["--seeds", "3", "--out", str(out)])
    result = toy_ablation.json.loads(out.read_text())
    (row,) = result["rows"]
    assert (row["T"], row["steps"], result["config"]["seeds"]) == (500, 500, 3)
    single = full_run(200, timesteps=(500,), step_counts=(), samplers=("DDIM (eta = 0)",), seeds=1,
                      floor_repeats=2, progress=False)["rows"][0]
    assert "wasserstein_std" not in single and row["wasserstein_std"] > 0
    assert row["wasserstein"] != single["wasserstein"]  # the mean over three draws, the first of which is single's


def test_seeds_below_one_are_refused():
    with pytest.raises(SystemExit):
        toy_ablation.main(["--seeds", "0"])
    with pytest.raises(ValueError, match="seeds"):
        toy_ablation.run_toy_ablation(10, seeds=0)
    with pytest.raises(ValueError, match="floor_repeats"):
        toy_ablation.run_toy_ablation(10, floor_repeats=1)


def test_shipped_report_is_what_the_current_code_writes():
    """The book reads this report: its config has the keys run() writes, and one of its rows re-draws alike."""
    shipped = toy_ablation.json.loads(toy_ablation.DEFAULT_OUT.read_text())
    config = shipped["config"]
    row = next(row for row in shipped["rows"] if row["T"] == 500 and row["sampler"] == "DDIM (eta = 0)")
    redrawn = toy_ablation.run_toy_ablation(config["n"], timesteps=(500,), step_counts=(row["steps"],),
                                            samplers=(row["sampler"],), seed=config["seed"], seeds=config["seeds"],
                                            floor_repeats=2, progress=False)
    assert redrawn["config"].keys() == config.keys()
    floor = toy_ablation.monte_carlo_floor(toy_mixture(), config["n"], config["floor_repeats"], config["seed"] + 2)
    for name in ("wasserstein", "ks"):
        assert floor[name] == pytest.approx(shipped["floor"][name])
    (again,) = [r for r in redrawn["rows"] if r["steps"] == row["steps"]]
    for name in ("wasserstein", "ks"):
        assert again[name] == pytest.approx(row[name], rel=1e-3, abs=1e-5)


def test_the_books_report_is_replaced_with_other_settings_only_on_request(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(toy_ablation, "run_toy_ablation",
                        lambda n, seed, seeds, **resume: {"config": {"n": n, "seed": seed, "seeds": seeds},
                                                "prior_mismatch": [], "rows": [{"T": 500, "wasserstein": 0.1}]})
    out = tmp_path / "toy.json"
    monkeypatch.setattr(toy_ablation, "DEFAULT_OUT", out)
    toy_ablation.main(["--n", "100"])
    toy_ablation.main(["--n", "100"])  # the same settings: made again
    for options, message in ((["--n", "200", "--seeds", "3"], "n 100 -> 200, seeds 10 -> 3"),
                             (["--n", "100", "--seeds", "1", "--replace"], "needs --seeds 2 or more")):
        with pytest.raises(SystemExit) as refused:
            toy_ablation.main(options)
        assert refused.value.code == 2 and message in capsys.readouterr().err
    assert toy_ablation.json.loads(out.read_text())["config"]["n"] == 100
    toy_ablation.main(["--n", "200", "--replace"])
    assert toy_ablation.json.loads(out.read_text())["config"]["n"] == 200
    toy_ablation.main(["--n", "300", "--seeds", "1", "--out", str(tmp_path / "scratch.json")])  # any other report


def test_an_interrupted_run_keeps_its_rows_and_resumes_with_the_rest(tmp_path, monkeypatch, capsys):
    full_run, real_draw, drawn, interrupted = toy_ablation.run_toy_ablation, toy_ablation.draw, [], []

    def small_run(n, seed, seeds, **resume):
        return full_run(n, timesteps=(500,), step_counts=(10, 20), samplers=("DDIM (eta = 0)",), seed=seed,
                        seeds=seeds, floor_repeats=2, progress=False, **resume)

    def draw(*args, **kwargs):
        drawn.append(args[2:4])  # (T, steps)
        if len(drawn) == 3 and not interrupted:  # Ctrl-C in the second row's first draw (two draws a row)
            interrupted.append(True)
            raise KeyboardInterrupt
        return real_draw(*args, **kwargs)

    monkeypatch.setattr(toy_ablation, "run_toy_ablation", small_run)
    monkeypatch.setattr(toy_ablation, "draw", draw)
    out = tmp_path / "toy.json"
    with pytest.raises(KeyboardInterrupt):
        toy_ablation.main(["--quick", "--seeds", "2", "--out", str(out)])
    assert not out.exists() and len(toy_ablation.json.loads(toy_ablation.partial_path(out).read_text())["rows"]) == 1
    kept = toy_ablation.partial_path(out).read_bytes()
    assert f"{toy_ablation.partial_path(out)} keeps the 1 row drawn so far" in capsys.readouterr().err
    # Other settings would drop those rows: refused without --replace, and the rows stay.
    with pytest.raises(SystemExit) as refused:
        toy_ablation.main(["--quick", "--seeds", "3", "--out", str(out)])
    assert refused.value.code == 2 and "(seeds 2 -> 3)" in capsys.readouterr().err
    assert toy_ablation.partial_path(out).read_bytes() == kept
    drawn.clear()
    toy_ablation.main(["--quick", "--seeds", "2", "--out", str(out)])
    assert drawn == [(500, 20), (500, 20), (500, 500), (500, 500)]  # the first row is not drawn again
    assert not toy_ablation.partial_path(out).exists()
    resumed = toy_ablation.json.loads(out.read_text())
    monkeypatch.setattr(toy_ablation, "draw", real_draw)
    toy_ablation.main(["--quick", "--seeds", "2", "--out", str(tmp_path / "whole.json")])
    whole = toy_ablation.json.loads((tmp_path / "whole.json").read_text())
    assert toy_ablation.without_timings(resumed) == toy_ablation.without_timings(whole)
