"""Data in: folders and zips of images, the bundled digits, CIFAR-10, Stanford Cars, points,
time series, and the training stream."""
