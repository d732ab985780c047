"""LoRA training for Kandinsky 2.2: the trainer, the legacy-checkpoint converter and the GPU benchmark (scripts)."""
