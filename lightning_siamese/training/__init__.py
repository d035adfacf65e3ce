"""The training wing (Lightning): the LightningModule, callbacks, checkpoints, the feature cache."""
