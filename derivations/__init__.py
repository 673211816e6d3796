"""SymPy derivations of every closed form the handout uses; ``python -m derivations.generate`` turns them into code.

Modules: ``ddpm`` (discrete chain, posterior, respacing, DDIM, P2 weighting, the cosine schedule, v-prediction),
``mixture`` (a Gaussian mixture under the noising kernel), ``vp_sde`` (the continuous-time VP-SDE of Problem 3).
"""
