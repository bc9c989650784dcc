"""Training internals: the one loop every gradient-based task runs on, its objectives, checkpoints and best
weights, early stopping, launch (accelerate, mixed precision, DeepSpeed/FSDP) and the speed levers."""
