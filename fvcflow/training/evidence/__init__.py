"""Evidence and report: best vs runner-up, calibration of the detector, the shortcut check, per-subgroup
numbers, the model card (:mod:`.assess`), and ``stage5/report.html`` (:mod:`.report`, with its
"where in the frame" section :mod:`.local_report`). Reads fitting's results, logs through tracking."""
