"""ImageNet channel statistics, in [0, 1] units: one place that models and data both read."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
