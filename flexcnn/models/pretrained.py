"""Pretrained torchvision classifiers (filled in by the Pretrained issue)."""
