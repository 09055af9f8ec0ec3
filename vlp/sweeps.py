"""Optuna sweeps that can be continued: ``vlp-train -m hparams_search=vqa_optuna`` (conf/hparams_search/).

Hydra's Optuna sweeper (hydra-optuna-sweeper 1.2) loads an existing study from its storage but then runs
``n_trials`` *more* trials, numbers the job folders from 0 again (overwriting the first run's folders),
and stops the whole sweep at the first trial that fails. This sweeper keeps its search space, samplers
and config, and changes the loop:

- ``n_trials`` is the size of the study: a continued study runs only the trials it still lacks;
- a trial whose job never came back (the sweep was killed while it ran) is closed as failed and does
  not count, so a continued sweep still ends with ``n_trials`` finished trials;
- job folders are numbered by trial number, so that a continued sweep writes new folders;
- a trial that fails (an exception, or no finite ``monitor`` value: vlp-train returns None) is told
  to the study as failed and the sweep goes on; one bad learning rate should not end a night's sweep.

Each trial's overrides and run folder are stored as its user attributes (``overrides``, ``run_dir``):
the sweep summary (:mod:`vlp.sweep_summary`) reads them from the storage.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from optuna.trial import TrialState

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def counted_trials(study: optuna.Study) -> int:
    """Finished trials whose job came back (it set ``run_dir``); interrupted ones are not counted."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if "run_dir" in t.user_attrs)


def trial_value(job: JobReturn) -> tuple[float | None, str | None]:
    """The job's objective, or None and why it has none."""
    try:
        value = job.return_value  # re-raises what a failed job raised
    except Exception as error:
        return None, f"the job raised {error!r}"
    if value is None:
        return None, "the job returned no value (the monitor metric was not logged, or not finite)"
    value = float(value)
    if not math.isfinite(value):
        return None, f"the job returned {value}"
    return value, None


def sqlite_folder(storage: Any) -> Path | None:
    """The folder of an ``sqlite:///path`` storage (None for other storages)."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///") :]).parent
    return None


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def sweep(self, arguments: list[str]) -> None:
        if isinstance(self.sampler, functools.partial):  # only the grid sampler is configured as a partial
            raise ValueError(
                "hydra/sweeper/sampler=grid: use a plain multirun for a grid (vlp-train -m key=a,b,c)"
            )
        directions = self._get_directions()
        if len(directions) != 1:
            raise ValueError(
                f"hydra.sweeper.direction={directions}: vlp-train optimises one metric (monitor)"
            )
        if self.storage is not None and not self.study_name:
            raise ValueError(
                "hydra.sweeper.study_name is unset: a stored study needs a fixed name to be continued"
            )
        self._process_searchspace_config()
        search_space, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + arguments)
        for name in fixed:
            search_space.pop(name, None)

        folder = sqlite_folder(self.storage)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            directions=directions,
            load_if_exists=True,
        )
        if [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
            raise ValueError(
                f"study {self.study_name} in {self.storage} was made to {study.directions[0].name.lower()}, "
                f"not {directions[0]}: use another hydra.sweep.dir or hydra.sweeper.study_name"
            )
        log.info("Optuna study %s in %s", study.study_name, self.storage or "memory (not kept)")
        self._close_interrupted_trials(study)
        done = counted_trials(study)
        if done:
            log.info(
                "study %s has %d of n_trials=%d trials: continuing", study.study_name, done, self.n_trials
            )
            # a seeded sampler would draw the first run's points again
            self.sampler.reseed_rng()

        remaining = self.n_trials - done
        while remaining > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, remaining))]
            overrides = self._configure_trials(trials, search_space, fixed)
            for trial, trial_overrides in zip(trials, overrides, strict=True):
                trial.set_user_attr("overrides", list(trial_overrides))
            # one process asks, so a batch's trial numbers are consecutive: job folder = trial number
            jobs = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, jobs, strict=True):
                trial.set_user_attr("run_dir", str(job.hydra_cfg.hydra.runtime.output_dir))
                value, problem = trial_value(job)
                if problem is None:
                    study.tell(trial, value)
                else:
                    log.warning("trial %d failed: %s", trial.number, problem)
                    study.tell(trial, state=TrialState.FAIL)
            remaining -= len(trials)

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            log.info(
                "best trial %d: %s = %s", study.best_trial.number, study.best_trial.params, study.best_value
            )
        else:
            log.warning("no trial of study %s completed", study.study_name)

    @staticmethod
    def _close_interrupted_trials(study: optuna.Study) -> None:
        """Trials still running in the storage belong to a sweep that was stopped: nothing will report
        them. Continuing a sweep assumes that the one before it has ended (and its jobs with it)."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            log.warning("trial %d was interrupted: marking it failed; it does not count", trial.number)
            study.tell(trial.number, state=TrialState.FAIL)
