"""Detectron2's per-process set-up for a training run, without its page-long config dump on the
console (the log file keeps it): shared by pretraining and fine-tuning."""

import logging
import sys

from detectron2.config import CfgNode
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

__all__ = ["keep_config_dump_off_console", "setup_run"]

# Records of Detectron2's default_setup that are a page each: the config file, the merged config,
# the environment table.
_DUMP_PREFIXES = ("Running with full config:", "Contents of args.config_file=", "Environment info:")


class _NoConfigDump(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_DUMP_PREFIXES)


def keep_config_dump_off_console(logger_name: str = "detectron2") -> None:
    """Drop the config dump of Detectron2's ``default_setup`` from the console handlers of
    ``logger_name`` (those writing to stdout / stderr; the log file's handler keeps it). Call
    after ``setup_logger`` created them."""
    for handler in logging.getLogger(logger_name).handlers:
        if getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
            if not any(isinstance(f, _NoConfigDump) for f in handler.filters):
                handler.addFilter(_NoConfigDump())


def setup_run(cfg: CfgNode, args) -> None:
    """Logging into ``cfg.OUTPUT_DIR`` with the config dump kept off the console, then Detectron2's
    ``default_setup`` (config.yaml, environment, seed) and the ``soco`` logger."""
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank())  # default_setup's own (cached) call
    keep_config_dump_off_console()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="soco")
