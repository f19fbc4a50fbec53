"""The queue side: worker processes pinned to GPUs, their supervisor, and the task runner."""
