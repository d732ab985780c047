"""What several test modules share: fakes, store helpers, app processes, an in-process site, LoRA training data."""
