"""Splitting a render over machines: shard K of N takes every N-th index starting at K-1.

K is 1-based (``--shard 1/8`` … ``--shard 8/8``). Interleaving, rather than contiguous blocks,
gives every shard a similar mix of one-at-a-time subsets, hence similar run times.

From the environment (when no ``--shard`` is given):
- SLURM job arrays: K = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1 (so ``--array=0-7`` and
  ``--array=1-8`` both work), N = SLURM_ARRAY_TASK_COUNT.
- Kubernetes Indexed Jobs: K = JOB_COMPLETION_INDEX + 1 (0-based there), N =
  CARPROBE_SHARD_COUNT (set it to the Job's ``completions``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .errors import CarprobeError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """'3/8' → (3, 8); K is 1-based, 1 <= K <= N."""
    match = _SHARD.match(str(text))
    if not match:
        raise CarprobeError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 3/8 (K is 1-based)")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= k <= n:
        raise CarprobeError(f"--shard {text!r}: K must lie in 1..N and N >= 1 (K is 1-based), e.g. 1/{max(n, 1)}")
    return k, n


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of a SLURM array task or a Kubernetes Indexed Job, or None outside both."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env:
        task = _env_int(env, "SLURM_ARRAY_TASK_ID")
        if "SLURM_ARRAY_TASK_COUNT" not in env:
            raise CarprobeError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; "
                                "submit with sbatch --array or pass --shard K/N")
        count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        first = _env_int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        k = task - first + 1
        if count < 1 or not 1 <= k <= count:
            raise CarprobeError(f"SLURM array task {task} (min {first}) does not fit "
                                f"SLURM_ARRAY_TASK_COUNT={count}; the array must be contiguous, "
                                "or pass --shard K/N")
        return k, count
    if "JOB_COMPLETION_INDEX" in env:
        index = _env_int(env, "JOB_COMPLETION_INDEX")
        if "CARPROBE_SHARD_COUNT" not in env:
            raise CarprobeError("JOB_COMPLETION_INDEX is set (Kubernetes Indexed Job) but "
                                "CARPROBE_SHARD_COUNT is not; set it to the Job's completions")
        count = _env_int(env, "CARPROBE_SHARD_COUNT")
        if count < 1 or not 0 <= index < count:
            raise CarprobeError(f"JOB_COMPLETION_INDEX={index} must lie in 0..CARPROBE_SHARD_COUNT-1 "
                                f"(CARPROBE_SHARD_COUNT={count})")
        return index + 1, count
    return None


def shard_indices(n: int, k: int, count: int) -> range:
    """Indices of shard k (1-based) of `count` over range(n)."""
    if count < 1 or not 1 <= k <= count:
        raise CarprobeError(f"shard {k}/{count}: K must lie in 1..N (K is 1-based)")
    return range(k - 1, n, count)


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise CarprobeError(f"environment variable {name}={env[name]!r}: expected an integer") from None
