"""The detector in use: load a registered (or any) detector and score new videos
(:mod:`.predict`: stages 2-4 rerun on the file, the detector's features, ``P(fake)``)."""
