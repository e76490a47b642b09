"""Detectron2's DetectionCheckpointer with atomic writes and the run's config inside each file."""

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

__all__ = ["PretrainCheckpointer"]


class PretrainCheckpointer(DetectionCheckpointer):
    """Files ``OUTPUT_DIR/<name>.pth`` = {"model", <checkpointables>, "iteration", "cfg"}.

    ``cfg`` is the YAML string of the resolved config (``cfg.dump()``). Each file and the
    ``last_checkpoint`` tag are written to a temporary name in the same folder and renamed, so
    a job killed while saving never leaves a truncated checkpoint behind (fvcore writes in place).
    """

    def __init__(self, model, save_dir: str, cfg_yaml: str, **checkpointables: Any):
        super().__init__(model, save_dir, save_to_disk=comm.is_main_process(), **checkpointables)
        self.cfg_yaml = cfg_yaml

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data["cfg"] = self.cfg_yaml
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        tmp = save_file + ".tmp"
        with open(tmp, "wb") as f:
            torch.save(data, f)
        os.replace(tmp, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        with open(path + ".tmp", "w") as f:
            f.write(last_filename_basename)
        os.replace(path + ".tmp", path)
