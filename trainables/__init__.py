"""What one trial runs: data, augmentation, methods, evaluation and the training loop."""
