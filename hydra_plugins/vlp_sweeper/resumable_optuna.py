"""Hydra finds sweepers only in the ``hydra_plugins`` namespace package: this is the name that
``hydra.sweeper._target_`` points at (conf/hparams_search/). The work is in :mod:`vlp.sweeps`, imported
when a sweep starts, so that Hydra's plugin scan at every ``vlp-train`` start does not import Optuna."""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    """Hydra's Optuna sweeper whose study, stored in the sweep folder, continues where it stopped."""

    def __init__(self, **config: Any) -> None:
        from vlp.sweeps import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(**config)
