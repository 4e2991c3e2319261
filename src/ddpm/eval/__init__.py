"""Measuring models: FID, bits/dim, distances between point sets, train-on-synthetic accuracy."""
