"""Tasks built on maps: open-vocabulary segmentation (:mod:`.segment`), multi-label recognition
(:mod:`.multilabel`), text → points for SAM (:mod:`.points`)."""
