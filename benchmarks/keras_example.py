"""The Keras example "Siamese Network" (keras.io/examples/vision/siamesenetwork), ported to
Keras 3 on the TensorFlow backend: the peer of ``lightning_siamese`` in a speed comparison.

It keeps the example's training loop: a ``PyDataset`` (Keras 3's ``Sequence``) that loads raw
0..255 images with ``load_img``/``img_to_array``, ResNet50 frozen up to ``conv5_block1_out``
with the Dense/BatchNormalization head, the three-input training model, and a ``SiameseModel``
whose ``train_step`` computes the triplet loss under ``tf.GradientTape`` and applies Adam(1e-4).
A callback times each epoch and averages the epoch's batch losses.

Changes from the example, each because the original is wrong or cannot run on Keras 3:

* anchors are listed from ``left/`` (the example lists both anchors and positives from the
  positive folder) and a left file pairs with the same-stem file in ``right/`` (sorted), where
  the example relied on two ``os.listdir`` orders matching;
* negatives avoid the batch's anchors by stem, so they work when extensions differ;
* the optional shuffle draws a permutation (the example's ``random.choices`` repeats samples);
  it stays off, as in the example;
* a ``PyDataset`` batch arrives in ``train_step`` as the tuple ``(x,)``, hence ``data[0]``,
  and the three-input training model is an attribute of ``SiameseModel`` (a global there);
* Keras 3 shows what ``train_step`` returns instead of averaging it over the epoch as Keras 2
  did, so ``SiameseModel`` keeps the epoch's running mean in a ``keras.metrics.Mean`` and also
  returns the batch's own loss (``batch_loss``), which the timing callback averages;
* ``--weights none`` by default, since ImageNet weights need a download (same compute);
* ``--precision mixed_bfloat16`` runs it under Keras' mixed-precision policy (bf16 compute,
  float32 variables), with the embeddings cast to float32 for the loss, as Keras' guide asks
  of a model's outputs.

It runs in its own virtual environment (``benchmarks/setup_keras.sh``) and imports nothing from
``lightning_siamese``.  Example::

    benchmarks/.venv-keras/bin/python benchmarks/keras_example.py --root data/ttl --json k.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from keras import layers

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def find_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """``(stem, left file, right file)`` for every stem found in both ``left/`` and ``right/``."""

    def by_stem(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            sys.exit(f"error: {folder} is not a folder (--root needs left/ and right/)")
        files = sorted(
            path
            for path in folder.iterdir()
            if path.is_file()
            and not path.name.startswith(".")
            and path.suffix.lower() in IMAGE_EXTENSIONS
        )
        return {path.stem: path for path in files}

    left, right = by_stem(root / "left"), by_stem(root / "right")
    return [(stem, left[stem], right[stem]) for stem in sorted(left) if stem in right]


class SiameseDatasetGenerator(keras.utils.PyDataset):
    """Batches of ``(anchor, positive, negative)`` images, stacked as ``(batch, 3, S, S, 3)``.

    As in the example: the anchor is a left file, the positive its right twin, and every
    negative is a random image (with replacement) of another pair, taken from the left or the
    right folder (one coin toss per batch), never one of the batch's anchors; images are raw
    0..255 floats; the last incomplete batch is dropped.
    """

    def __init__(
        self,
        pairs: list[tuple[str, Path, Path]],
        target_shape: tuple[int, int],
        batch_size: int = 128,
        shuffle: bool = False,
        limit_batches: int | None = None,
        normalize: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)  # workers / use_multiprocessing: Keras defaults
        self.names = np.array([stem for stem, _, _ in pairs])
        self.anchor_images = np.array([str(left) for _, left, _ in pairs])
        self.positive_images = np.array([str(right) for _, _, right in pairs])
        self.target_shape = target_shape
        self.batch_size = batch_size
        self.num_examples = len(pairs)
        self._num_batches = self.num_examples // batch_size
        if limit_batches is not None:
            self._num_batches = min(self._num_batches, limit_batches)
        self.shuffle = shuffle
        self.normalize = normalize

    @property
    def num_batches(self) -> int:  # a read-only property of PyDataset
        return self._num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> np.ndarray:
        batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
        anchor_imgs = self.anchor_images[batch]
        positive_imgs = self.positive_images[batch]
        loaded_examples = set(self.names[batch])
        negative_imgs = np.array(
            self.get_negative_imgs(
                from_anchor_dir=random.choice([True, False]), loaded_examples=loaded_examples
            )
        )
        if self.shuffle:
            order = np.random.permutation(len(anchor_imgs))
            anchor_imgs = anchor_imgs[order]
            positive_imgs = positive_imgs[order]
            negative_imgs = negative_imgs[order]
        images = [
            self.preprocess_img(paths) for paths in (anchor_imgs, positive_imgs, negative_imgs)
        ]
        return np.stack(images, axis=1)  # (batch, 3, height, width, channels)

    def get_negative_imgs(
        self, from_anchor_dir: bool = True, loaded_examples: set[str] | None = None
    ) -> list[str]:
        loaded_examples = loaded_examples or set()
        folder = self.anchor_images if from_anchor_dir else self.positive_images
        candidates = [
            path
            for name, path in zip(self.names, folder, strict=True)
            if name not in loaded_examples
        ]
        return random.choices(candidates, k=self.batch_size)

    def preprocess_img(self, imgs: np.ndarray) -> np.ndarray:
        output = []
        for img_path in imgs:
            img = keras.utils.load_img(img_path, target_size=self.target_shape)
            output.append(keras.utils.img_to_array(img))
        images = np.stack(output)
        if self.normalize:  # ImageNet mean/std on [0, 1] pixels, as lightning-siamese does
            images = (images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return images.astype(np.float32)


def build_embedding(image_size: int, weights: str | None) -> keras.Model:
    target_shape = (image_size, image_size)
    base_cnn = keras.applications.ResNet50(
        weights=weights, input_shape=(*target_shape, 3), include_top=False
    )
    trainable = False
    for layer in base_cnn.layers:
        if layer.name == "conv5_block1_out":
            trainable = True
        layer.trainable = trainable

    flatten = layers.Flatten()(base_cnn.output)
    dense1 = layers.Dense(512, activation="relu")(flatten)
    dense1 = layers.BatchNormalization()(dense1)
    dense2 = layers.Dense(256, activation="relu")(dense1)
    dense2 = layers.BatchNormalization()(dense2)
    output = layers.Dense(256)(dense2)
    return keras.Model(base_cnn.input, output, name="SiameseNetwork")


def build_training_model(embedding: keras.Model, image_size: int) -> keras.Model:
    shape = (image_size, image_size, 3)
    anchor_input = layers.Input(shape=shape)
    positive_input = layers.Input(shape=shape)
    negative_input = layers.Input(shape=shape)
    return keras.Model(
        [anchor_input, positive_input, negative_input],
        {
            "anchor_embedding": embedding(anchor_input),
            "positive_embedding": embedding(positive_input),
            "negative_embedding": embedding(negative_input),
        },
    )


class SiameseModel(keras.Model):
    def __init__(self, model: keras.Model, training_model: keras.Model, alpha: float = 0.5):
        super().__init__()
        self.embedding = model
        self.training_model = training_model
        self.alpha = alpha
        # Keras 2 averaged the returned loss over the epoch in its progress bar; Keras 3 shows
        # what train_step returns, so the epoch's running mean is kept here (reset every epoch).
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, inputs):
        pass

    def train_step(self, data):
        data = data[0]  # a PyDataset batch arrives as the tuple (x,)
        with tf.GradientTape() as tape:
            # No `training=True`, as in the example: BatchNormalization uses its moving stats.
            embeddings = self.training_model((data[:, 0], data[:, 1], data[:, 2]))
            # float32 under mixed precision (a no-op otherwise), as Keras' guide asks of outputs.
            embeddings = {name: tf.cast(value, "float32") for name, value in embeddings.items()}
            anchor_positive_dist = tf.reduce_sum(
                tf.square(embeddings["anchor_embedding"] - embeddings["positive_embedding"]), -1
            )
            anchor_negative_dist = tf.reduce_sum(
                tf.square(embeddings["anchor_embedding"] - embeddings["negative_embedding"]), -1
            )
            loss = anchor_positive_dist - anchor_negative_dist
            loss = tf.reduce_mean(tf.maximum(loss + self.alpha, 0.0))
        grads = tape.gradient(loss, self.training_model.trainable_weights)
        self.optimizer.apply_gradients(
            zip(grads, self.training_model.trainable_weights, strict=True)
        )
        self.loss_tracker.update_state(loss)
        # `loss`: the epoch's running mean (what Keras 2 showed); `batch_loss`: this batch's.
        # Scale-free companions for comparing frameworks: triplet accuracy and mean distances.
        accuracy = tf.reduce_mean(tf.cast(anchor_positive_dist < anchor_negative_dist, "float32"))
        return {
            "loss": self.loss_tracker.result(),
            "batch_loss": loss,
            "batch_accuracy": accuracy,
            "batch_distance_positive": tf.reduce_mean(anchor_positive_dist),
            "batch_distance_negative": tf.reduce_mean(anchor_negative_dist),
        }


class EpochStats(keras.callbacks.Callback):
    """Wall time of each epoch and its loss: the mean of the epoch's batch losses.

    ``batch_loss`` in the logs is each batch's own loss; ``loss`` is the running mean of the
    epoch so far (``SiameseModel``'s tracker, which ``fit`` resets at each epoch's start), kept
    to check that the two agree at the epoch's end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict] = []
        self._losses: list[float] = []
        self._running_mean = float("nan")
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._losses = []
        self._extra: dict[str, list[float]] = {}
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._losses.append(float(logs["batch_loss"]))
        for name in ("accuracy", "distance_positive", "distance_negative"):
            self._extra.setdefault(name, []).append(float(logs[f"batch_{name}"]))
        self._running_mean = float(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.epochs.append(
            {
                "seconds": seconds,
                "loss": float(np.mean(self._losses)),
                "batch_losses": self._losses,
                "running_mean": self._running_mean,
                **{name: float(np.mean(values)) for name, values in self._extra.items()},
            }
        )


def count_params(weights) -> int:
    return int(sum(np.prod(weight.shape) for weight in weights))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder with left/ and right/")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=200)
    parser.add_argument("--weights", choices=["none", "imagenet"], default="none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16"],
        default="float32",
        help="Keras' dtype policy: float32, or bf16 compute with float32 variables",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--limit-batches", type=int, default=None, help="batches per epoch, max")
    parser.add_argument(
        "--normalize",
        action="store_true",
        help="ImageNet mean/std normalisation (the example feeds raw 0..255 pixels); puts the "
        "losses on the same scale as lightning-siamese's",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "image_size", "limit_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)  # Python, NumPy and TensorFlow
    keras.mixed_precision.set_global_policy(args.precision)

    pairs = find_pairs(args.root)
    dataset = SiameseDatasetGenerator(
        pairs,
        (args.image_size, args.image_size),
        args.batch_size,
        shuffle=False,
        limit_batches=args.limit_batches,
        normalize=args.normalize,
    )
    if len(dataset) == 0:
        sys.exit(f"error: {len(pairs)} pairs under {args.root}: fewer than one batch")

    start = time.perf_counter()
    embedding = build_embedding(args.image_size, None if args.weights == "none" else "imagenet")
    training_model = build_training_model(embedding, args.image_size)
    siamese_model = SiameseModel(embedding, training_model)
    siamese_model.compile(optimizer=keras.optimizers.Adam(0.0001))
    build_seconds = time.perf_counter() - start
    trainable = count_params(embedding.trainable_weights)
    total = count_params(embedding.weights)
    print(
        f"keras {keras.__version__}, tensorflow {tf.__version__}: {len(pairs)} pairs, "
        f"{len(dataset)} batches of {args.batch_size} per epoch, {args.image_size}px, "
        f"weights={args.weights}, precision={args.precision}, "
        f"jit_compile={siamese_model.jit_compile}"
    )
    print(
        f"embedding: {total:,} parameters, {trainable:,} trainable "
        f"(the example's summary: 60,510,720 trainable); built in {build_seconds:.1f} s"
    )

    stats = EpochStats()
    start = time.perf_counter()
    siamese_model.fit(dataset, epochs=args.epochs, callbacks=[stats])
    fit_seconds = time.perf_counter() - start

    images_per_epoch = 3 * args.batch_size * len(dataset)
    epochs = [
        {
            "seconds": epoch["seconds"],
            "loss": epoch["loss"],
            "images_per_second": images_per_epoch / epoch["seconds"],
            "batch_losses": epoch["batch_losses"],
            "triplet_accuracy": epoch["accuracy"],
            "distance_positive": epoch["distance_positive"],
            "distance_negative": epoch["distance_negative"],
        }
        for epoch in stats.epochs
    ]
    for number, epoch in enumerate(stats.epochs, 1):
        mean, running = epoch["loss"], epoch["running_mean"]
        if not np.isclose(mean, running, rtol=1e-4, atol=1e-4):
            print(f"warning: epoch {number}: mean of batch losses {mean} != Keras's {running}")
    result = {
        "framework": "keras",
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "pairs": len(pairs),
        "batches_per_epoch": len(dataset),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "weights": args.weights,
        "precision": args.precision,
        "seed": args.seed,
        "jit_compile": bool(siamese_model.jit_compile),
        "build_seconds": build_seconds,
        "epochs": epochs,
        "fit_seconds": fit_seconds,
        "images_per_second": images_per_epoch * len(epochs) / fit_seconds,
        "final_loss": epochs[-1]["loss"],
        "normalize": args.normalize,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    print("\nepoch  seconds  images/s  mean loss")
    for number, epoch in enumerate(epochs, 1):
        print(
            f"{number:5d}  {epoch['seconds']:7.1f}  {epoch['images_per_second']:8.1f}"
            f"  {epoch['loss']:.4f}"
        )
    print(
        f"fit: {fit_seconds:.1f} s, {result['images_per_second']:.1f} images/s "
        f"({images_per_epoch} images per epoch), final loss {result['final_loss']:.4f}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
