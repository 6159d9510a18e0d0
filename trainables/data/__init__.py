"""In-memory datasets and batched, on-device augmentation."""
