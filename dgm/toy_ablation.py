"""Problem 2's ablation where the truth is known: every sampler on the 1-D mixture with the exact score.

For T in {500, 1000, 2000} and a range of step counts, the DDPM samplers (ancestral with sigma^2 = beta and with
beta_tilde, DDIM) run with the exact noise predictor eps* of ``derivations/mixture.py``, and the reverse SDE and the
probability-flow ODE run on the VP-SDE that the same T discretises (beta(t) = T beta_k, ``derivations/vp_sde.py``,
section 4). Each is scored against p_0 by the 1-Wasserstein distance and the KS statistic, beside the Monte-Carlo
floor of two independent samples of p_0. Book chapters "Ground truth for the ablation" and "The number of timesteps".

Run: ``dgm toy-ablation`` (or ``python -m dgm.toy_ablation``); ``--quick`` runs a small N into ``runs/``. A run keeps
its finished rows beside the report (``partial_path``) until it ends, so the same command resumes an interrupted one.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from tqdm import tqdm

from dgm import closed_forms
from dgm.ddpm import DDPM
from dgm.files import atomic_write_csv, atomic_write_text, changed_values, check_replaceable, check_writable
from dgm.labels import SIGMA_LABELS
from dgm.mixture import exact_noise_predictor, toy_mixture
from dgm.paths import RESULTS, RUNS
from dgm.schedules import PROBLEM_SET_BETA_MAX, PROBLEM_SET_BETA_MIN, ddpm_schedules
from dgm.sde import VPSDE

DEFAULT_OUT = RESULTS / "toy_ablation.json"
QUICK_OUT = RUNS / "toy_ablation_quick.json"  # --quick never replaces the report the book reads
TIMESTEPS = (500, 1000, 2000)
STEP_COUNTS = (10, 20, 50, 100, 200, 500)
REPORT_KEYS = ("config", "prior_mismatch", "rows")  # what marks a report of dgm toy-ablation
QUICK_N = 5_000  # samples per run with --quick
SEEDS = 10  # draws per row: enough for a standard error that tells a sampler from the Monte-Carlo floor
FLOOR_REPEATS = 200  # pairs behind the floor: its mean to 4%, its spread to 5% (seconds at n = 100,000)
DDIM, REVERSE_SDE, PROBABILITY_FLOW = "DDIM (eta = 0)", "reverse SDE", "probability-flow ODE"  # labels in the report
DDPM_SAMPLERS = {  # label: keyword arguments of DDPM.sample
    **{f"ancestral, {SIGMA_LABELS[sigma]}": {"sampler": "ancestral", "sigma": sigma} for sigma in SIGMA_LABELS},
    DDIM: {"sampler": "ddim"},
}
SDE_SAMPLERS = (REVERSE_SDE, PROBABILITY_FLOW)
DETERMINISTIC_SAMPLERS = (DDIM, PROBABILITY_FLOW)  # the rest draw fresh noise at every step


def equivalent_sde(T):
    """The VP-SDE that the problem set's chain approximates, to first order in beta, with N = T steps of 1/T:
    beta(t) = T beta_k (derivations/vp_sde.py, section 4)."""
    return VPSDE(beta_min=float(closed_forms.vp_rate_of_chain(PROBLEM_SET_BETA_MIN, T)),
                 beta_max=float(closed_forms.vp_rate_of_chain(PROBLEM_SET_BETA_MAX, T)))


def draw(mixture, sampler, T, steps, n, seed, dtype=torch.float32):
    """n samples from one sampler of the grid, as a NumPy array.

    float32 is faster than float64 (benchmarks/sde_paths.py), and its rounding is far below the Monte-Carlo floor.
    """
    if sampler in DDPM_SAMPLERS:
        alpha_bar = ddpm_schedules(PROBLEM_SET_BETA_MIN, PROBLEM_SET_BETA_MAX, T)["alpha_bar"]
        model = DDPM(exact_noise_predictor(mixture, alpha_bar), beta_min=PROBLEM_SET_BETA_MIN,
                     beta_max=PROBLEM_SET_BETA_MAX, T=T, shape=(1,))
        generator = torch.Generator().manual_seed(seed)
        return model.sample(n, steps=steps, generator=generator, dtype=dtype, **DDPM_SAMPLERS[sampler])[:, 0].numpy()
    if sampler not in SDE_SAMPLERS:
        raise ValueError(f"sampler must be one of {tuple(DDPM_SAMPLERS) + SDE_SAMPLERS}, got {sampler!r}")
    sde = equivalent_sde(T)
    x1 = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)  # the prior N(0, 1)

    def score(x, t):
        return sde.score(mixture, x, t)

    if sampler == REVERSE_SDE:
        return sde.sample_reverse(x1, score, steps=steps, rng=seed + 1).numpy()
    return sde.sample_probability_flow(x1, score, steps=steps).numpy()


def distances(samples, reference):
    """1-Wasserstein distance and KS statistic between two samples."""
    return {"wasserstein": float(scipy.stats.wasserstein_distance(samples, reference)),
            "ks": float(scipy.stats.ks_2samp(samples, reference).statistic)}


def monte_carlo_floor(mixture, n, repeats, seed):
    """Mean and standard deviation of the distances between two independent samples of p_0 of size n."""
    rng = np.random.default_rng(seed)
    values = [distances(mixture.sample(n, rng), mixture.sample(n, rng)) for _ in range(repeats)]
    return {name: {"mean": float(np.mean([v[name] for v in values])),
                   "std": float(np.std([v[name] for v in values], ddof=1))}  # as the rows' spread over their seeds
            for name in ("wasserstein", "ks")}


def prior_mismatch(mixture, T):
    """Sup-distance between the true q(x_T) and the N(0, 1) the samplers start from: what a short chain costs."""
    alpha_bar_T = float(ddpm_schedules(PROBLEM_SET_BETA_MIN, PROBLEM_SET_BETA_MAX, T)["alpha_bar"][-1])
    grid = np.linspace(-6, 6, 4001)
    ks = float(np.abs(mixture.cdf(grid, np.log(alpha_bar_T)) - scipy.stats.norm.cdf(grid)).max())
    return {"T": T, "alpha_bar_T": alpha_bar_T, "ks_q_T_vs_prior": ks}


def run_toy_ablation(n, timesteps=TIMESTEPS, step_counts=STEP_COUNTS, samplers=tuple(DDPM_SAMPLERS) + SDE_SAMPLERS,
                     seed=0, seeds=SEEDS, floor_repeats=FLOOR_REPEATS, progress=True, done=(), save_rows=None):
    """The grid as a dict ready for JSON: config, floor, per-T prior mismatch and one row per run.

    With ``seeds`` > 1 each row is drawn ``seeds`` times, each with its own reference sample of p_0, and gives the
    mean distance and its standard deviation over the draws; the first draw is the one ``seeds`` = 1 makes. Rows in
    ``done`` (of an interrupted run with the same n, seed and seeds) are kept, not drawn again: each row's draws have
    their own seeds. ``save_rows(rows)`` follows every row.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    if floor_repeats < 2:
        raise ValueError(f"floor_repeats must be at least 2 for the floor's spread, got {floor_repeats}")
    mixture = toy_mixture()
    bases = [seed + 1000 * replicate for replicate in range(seeds)]
    references = [mixture.sample(n, rng=np.random.default_rng(base)) for base in bases]
    grid = [(T, sampler, steps) for T in timesteps for sampler in samplers
            for steps in sorted({s for s in step_counts if s < T} | {T})]
    rows, kept = [], {(row["T"], row["sampler"], row["steps"]): row for row in done}
    for T, sampler, steps in tqdm(grid, desc="toy ablation", disable=not progress):
        if (T, sampler, steps) in kept:
            rows.append(kept[T, sampler, steps])
            continue
        start = time.perf_counter()
        draws = [distances(draw(mixture, sampler, T, steps, n, base + 1), reference)
                 for base, reference in zip(bases, references)]
        row = {"T": T, "sampler": sampler, "steps": steps}
        for name in ("wasserstein", "ks"):
            row[name] = float(np.mean([values[name] for values in draws]))
            if seeds > 1:
                row[f"{name}_std"] = float(np.std([values[name] for values in draws], ddof=1))
        rows.append({**row, "seconds": (time.perf_counter() - start) / seeds})
        if save_rows is not None:
            save_rows(rows)
    return {
        "config": {"n": n, "seed": seed, "seeds": seeds,
                   "mixture": {"weights": mixture.weights.tolist(), "means": mixture.means.tolist(),
                               "stds": mixture.stds.tolist()},
                   "beta_min": PROBLEM_SET_BETA_MIN, "beta_max": PROBLEM_SET_BETA_MAX, "floor_repeats": floor_repeats},
        "floor": monte_carlo_floor(mixture, n, floor_repeats, seed + 2),
        "prior_mismatch": [prior_mismatch(mixture, T) for T in timesteps],
        "rows": rows,
    }


def write_report(result, out):
    """Write the JSON and, beside it, a CSV of the rows, each atomically."""
    out = Path(out)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    atomic_write_csv(out.with_suffix(".csv"), result["rows"])


def partial_path(out):
    """Where a run writing ``out`` keeps its finished rows until it ends: a Ctrl-C loses none of them."""
    return Path(out).with_suffix(".partial.json")


def partial_run(out):
    """The settings (n, seed, seeds) and finished rows of an interrupted run into ``out``: ``(None, [])`` if none."""
    try:
        partial = json.loads(partial_path(out).read_text())
    except (OSError, ValueError):
        return None, []
    if not isinstance(partial, dict) or not isinstance(partial.get("rows"), list):
        return None, []
    return partial.get("settings"), partial["rows"]


def without_timings(result):
    """The report without each row's seconds, which differ between two runs of the same draws."""
    return {**result, "rows": [{key: value for key, value in row.items() if key != "seconds"}
                               for row in result.get("rows", [])]}


def holds_the_same_numbers(out, result):
    """Whether the report at ``out`` already holds ``result``'s numbers: re-running it then leaves the file as it is."""
    try:
        previous = json.loads(Path(out).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(previous, dict) and without_timings(previous) == without_timings(json.loads(json.dumps(result)))


def changed_settings(out, settings):
    """How ``settings`` differ from those of the report at ``out`` ("n 100000 -> 5000", ...); none if there is none."""
    if not Path(out).is_file():
        return []
    try:
        previous = json.loads(Path(out).read_text())["config"]
    except (ValueError, KeyError, TypeError):
        previous = {}
    return changed_values(previous, settings)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm toy-ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="samples per run (default 100,000)")
    parser.add_argument("--quick", action="store_true", help=f"n = {QUICK_N:,}, written to {QUICK_OUT} (CI, trials)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the first draw's seed; the others follow from it (default 0)")
    parser.add_argument("--seeds", type=int, default=SEEDS,
                        help=f"draws per row, each from its own seed; rows give the mean and, with more than one, "
                        f"the standard deviation (default {SEEDS})")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON path; the CSV goes beside it (default {DEFAULT_OUT}, {QUICK_OUT} with --quick)")
    parser.add_argument("--replace", action="store_true",
                        help=f"replace {DEFAULT_OUT} though it was made with another n, seed or seeds, and drop "
                        "the rows an interrupted run with other settings left")
    args = parser.parse_args(argv)
    args.out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    if args.out.suffix != ".json":
        parser.error(f"--out {args.out} must end in .json (the CSV is written beside it)")
    if args.quick and args.n != parser.get_default("n"):
        parser.error(f"--quick sets n = {QUICK_N:,}: give --quick or --n, not both")
    n = QUICK_N if args.quick else args.n
    if n < 2:
        parser.error("--n must be at least 2")
    if args.seed < 0:
        parser.error("--seed must be a non-negative integer")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    try:
        check_writable(args.out)
        check_writable(args.out.with_suffix(".csv"))
        check_replaceable(args.out, "a toy-ablation report", REPORT_KEYS, table=True)
    except ValueError as error:
        parser.error(str(error))
    settings = {"n": n, "seed": args.seed, "seeds": args.seeds}
    if args.out.resolve() == DEFAULT_OUT:  # the report the book reads
        if args.seeds < 2:
            parser.error(f"{DEFAULT_OUT} needs --seeds 2 or more: the book compares each row with the floor by the "
                         "standard error over its seeds")
        changed = changed_settings(args.out, settings)
        if changed and not args.replace:
            parser.error(f"{args.out} was made with other settings ({', '.join(changed)}), and the book's text rests "
                         "on its numbers: pass --replace to replace it, or --out for a new report")
    partial = partial_path(args.out)
    kept, done = partial_run(args.out)
    if done and kept != settings and not args.replace:
        parser.error(f"{partial} holds {len(done)} rows that an interrupted run drew with other settings "
                     f"({', '.join(changed_values(kept or {}, settings))}): run with those to finish it, pass "
                     "--replace to drop them, or --out for a new report")
    done = done if kept == settings else []
    if done:
        print(f"resuming from {partial}: {len(done)} rows already drawn")
    try:
        result = run_toy_ablation(n, seed=args.seed, seeds=args.seeds, done=done, save_rows=lambda rows: (
            atomic_write_text(partial, json.dumps({"settings": settings, "rows": rows}) + "\n")))
    except KeyboardInterrupt:
        kept, rows = partial_run(args.out)
        if rows and kept == settings:
            count = f"{len(rows)} row{'s' * (len(rows) != 1)}"
            print(f"dgm toy-ablation: {partial} keeps the {count} drawn so far; the same command resumes from there",
                  file=sys.stderr)
        raise
    partial.unlink(missing_ok=True)
    if holds_the_same_numbers(args.out, result) and args.out.with_suffix(".csv").is_file():
        print(f"{args.out} already holds these numbers (unchanged; only the timings differ)")
        return
    write_report(result, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')} ({len(result['rows'])} rows, n = {n:,})")


if __name__ == "__main__":
    main()
