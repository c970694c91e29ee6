"""The distributed layer: Ray Data stages, Ray Train/Tune, MLflow tracking. The only part of vmr that imports Ray."""
