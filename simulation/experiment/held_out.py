"""Leave-one-site-out: train on all sites but one, test on the left-out site's pathological volumes.

The study's premise is that a model trained at one hospital degrades on
another hospital's scanner. Held-out *subjects* of the training sites
cannot show it (the model has seen their scanners); a held-out *site* can.

Per experiment seed s the held-out site is ``sorted(sites)[s mod n_sites]``
(:func:`held_out_site_for`): the site rotates over the seeds, so each seed
costs one training of every arm - the same as the held-out-subject
experiment - instead of n_sites trainings for a full rotation per seed.
With 5 seeds and 4 sites one site is held out twice; the pairing of the
statistics is within a seed (every arm of a seed faces the same held-out
site), so the paired differences stay valid.

:func:`split_held_out_site` gives two cohorts:

* **training**: the other sites only - their healthy training slices,
  patients and healthy validation volumes, and their own pathological
  volumes (the held-out-*subject* evaluation of this seed);
* **held-out site**: that site's pathological volumes as the test set, with
  the *training* sites' healthy validation volumes for the detection
  threshold. Nothing of the held-out site - no healthy scan, no validation
  volume - enters training, learning-rate tuning, early stopping or the
  threshold: a new hospital is met with what the federation already has.
"""

from __future__ import annotations

from dataclasses import replace

__all__ = ["held_out_site_for", "split_held_out_site", "without_test_volumes"]


def held_out_site_for(seed: int, site_names) -> str:
    """The site held out in experiment seed ``seed``: ``sorted(site_names)[seed mod n]``."""
    names = sorted(site_names)
    if len(names) < 3:
        raise ValueError(f"leave-one-site-out needs at least 3 sites (2 to federate, 1 to hold out); got {names}")
    return names[int(seed) % len(names)]


def split_held_out_site(cohort, site: str):
    """(training cohort without ``site``, evaluation cohort of ``site``'s pathological volumes); module docstring."""
    from ..engines.inprocess.simulate import CohortSplit

    if site not in cohort.site_names:
        raise ValueError(f"no site {site!r} in the cohort (sites {cohort.site_names})")
    names = [n for n in cohort.site_names if n != site]
    held = cohort.examples[site]
    held_ids = {id(v) for v in (*held.healthy, *held.pathology)}
    val = [v for v in cohort.val if id(v) not in held_ids]
    pathology = [v for v in cohort.pathology if id(v) not in held_ids]
    training = CohortSplit(names, {n: cohort.train[n] for n in names}, {n: cohort.patients[n] for n in names},
                           val, pathology, cohort.data_root, examples={n: cohort.examples[n] for n in names},
                           skipped=[s for s in cohort.skipped if s.get("site") != site])
    test = CohortSplit([site], {}, {}, list(val), list(held.pathology), cohort.data_root,
                       examples={site: held}, skipped=[])
    return training, test


def without_test_volumes(cohort):
    """``cohort`` with no pathological volume: what learning-rate tuning trains on (it must never see a test
    volume; the simulation then trains and skips the detection evaluation)."""
    return replace(cohort, pathology=[])
