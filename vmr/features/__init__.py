"""Stage 1 of the architecture: videos -> CLIP frame features in a feature store.

``video`` decodes sampled frames with their container timestamps, ``clip`` wraps open_clip's towers, ``extraction``
embeds one video in-process (the pieces :mod:`vmr.pipeline.extract` runs on Ray Data), ``store`` is the feature
store (per-video features and manifest entries), and ``settings`` is the one description of how features were made.
"""
