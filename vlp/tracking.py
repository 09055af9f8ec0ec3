"""What every logger records besides metrics, and whether wandb can go online.

``logger=wandb`` is online when a wandb API key is configured (``WANDB_API_KEY``, or a netrc entry for
the wandb host, which ``wandb login`` writes) and offline otherwise, so that a machine without an
account (CI, a laptop, a cluster without internet) still runs; sync such runs later with
``wandb sync <run dir>/wandb``.
"""

from __future__ import annotations

import netrc
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

# the checkout vlp runs from (None of this applies to an installed, non-editable copy)
REPO_ROOT = Path(__file__).resolve().parents[1]


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:  # NETRC names another file, as for wandb and curl
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):  # no ~/.netrc (the usual case), or one we cannot read
        return False


def wandb_offline() -> bool:
    """The ``${vlp_wandb_offline:}`` resolver of conf/logger/wandb.yaml."""
    return not wandb_api_key_configured()


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit the code runs from and whether the checkout has changes (untracked files included:
    a new module is as much a change as an edit); both None outside a git checkout."""
    if not (repo / ".git").exists():
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):  # no git executable, or not a repository after all
        return {"commit": None, "dirty": None}


def run_hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The resolved run config and the code's git state (``git.commit``, ``git.dirty``)."""
    params = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(params, dict)
    return {**params, "git": git_state()}
