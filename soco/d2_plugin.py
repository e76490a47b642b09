"""What stock Detectron2 scripts need from soco, registered by one import.

Add one line at the top of Detectron2's ``tools/train_net.py`` (or any script built on
``detectron2.engine``)::

    import soco.d2_plugin  # noqa: F401  (soco's demo datasets and ROI heads)

and it trains and evaluates on the embedded demo datasets (``soco_demo_det_train`` /
``soco_demo_det_val``, COCO format, built on first use under ``SOCO_DATASETS``) and builds the
C4 fine-tune configs' ``Res5ROIHeadsExtraNorm``. Worker processes started by Detectron2's
``launch`` re-run the script's imports, so the line registers in every process.
"""

from soco.embedded import DATASET_NAMES
from soco.modeling.roi_heads import Res5ROIHeadsExtraNorm

__all__ = ["DATASET_NAMES", "Res5ROIHeadsExtraNorm"]
