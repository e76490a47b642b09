"""Data: proposals, views and box transforms, augmentations, datasets, loaders."""
