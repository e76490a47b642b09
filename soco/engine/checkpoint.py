"""Detectron2's DetectionCheckpointer with atomic writes, the run's config inside each file, and
a resume that falls back to the newest readable checkpoint."""

import glob
import os
import re
from typing import Any, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

from ..utils.files import atomic_write

__all__ = ["AtomicCheckpointer", "PretrainCheckpointer", "checkpoint_problem"]

_ITERATION_NAME = re.compile(r"model_(\d+)\.pth$")


def checkpoint_problem(path: str) -> Optional[str]:
    """None if ``path`` opens as a torch checkpoint with a ``model`` entry, else why not.

    Memory-mapped, so the weights are not read: this catches missing, truncated and foreign
    files (the zip directory sits at the end of the file), not bit flips inside a tensor.
    """
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to open makes the file unusable
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {first_line}"
    if not isinstance(data, dict) or "model" not in data:
        return "no 'model' entry"
    return None


class AtomicCheckpointer(DetectionCheckpointer):
    """Detectron2's DetectionCheckpointer whose files and ``last_checkpoint`` tag are written
    with ``soco.utils.files.atomic_write``, so a job killed (or a disk filling up) while saving
    never leaves a truncated checkpoint behind and the previous one stays the last (fvcore
    writes in place).

    ``get_checkpoint_file`` (what ``--resume`` loads) returns the file ``last_checkpoint``
    names if it opens, else the newest ``model_*.pth`` that does, with a warning naming the
    damaged file; ``model_final.pth`` counts as the newest.
    """

    def extra_data(self) -> dict:
        """Entries added to every saved file."""
        return {}

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data.update(self.extra_data())
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename), "w")

    def _candidates(self):
        """Checkpoint files of save_dir, newest first (the tagged one, final, then by iteration)."""
        tagged = super().get_checkpoint_file() if super().has_checkpoint() else ""
        numbered = sorted(
            glob.glob(os.path.join(self.save_dir, "model_*.pth")),
            key=lambda p: int(_ITERATION_NAME.search(p).group(1)) if _ITERATION_NAME.search(p) else -1,
            reverse=True,
        )
        ordered = [tagged, os.path.join(self.save_dir, "model_final.pth"), *numbered]
        seen = set()
        return [p for p in ordered if p and os.path.isfile(p) and not (p in seen or seen.add(p))]

    def has_checkpoint(self) -> bool:
        return bool(self._candidates())

    def get_checkpoint_file(self) -> str:
        candidates = self._candidates()
        for path in candidates:
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            self.logger.warning(f"Checkpoint {path} cannot be read ({problem}); trying the previous one")
        if candidates:
            raise RuntimeError(
                f"no readable checkpoint in {self.save_dir} (tried {', '.join(candidates)}); "
                "start without --resume (with --overwrite) or restore a checkpoint"
            )
        return ""


class PretrainCheckpointer(AtomicCheckpointer):
    """Files ``OUTPUT_DIR/<name>.pth`` = {"model", <checkpointables>, "iteration", "cfg"}, where
    ``cfg`` is the YAML string of the resolved config (``cfg.dump()``); saved by the main
    process only."""

    def __init__(self, model, save_dir: str, cfg_yaml: str, **checkpointables: Any):
        super().__init__(model, save_dir, save_to_disk=comm.is_main_process(), **checkpointables)
        self.cfg_yaml = cfg_yaml

    def extra_data(self) -> dict:
        return {"cfg": self.cfg_yaml}
