"""The data wing: image files, pair folders, splits, triplets, the DataModule, demo builders."""
