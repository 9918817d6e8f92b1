"""Tasks: what a label is and how predictions are scored (classification, regression, multi-label)."""
