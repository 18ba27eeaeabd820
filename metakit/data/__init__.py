"""Task samplers: the TaskSampler interface and the built-in samplers."""
