"""The training job: datasets, recipes, training loop, evaluation (`python -m training`)."""
