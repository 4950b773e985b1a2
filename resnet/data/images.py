"""Image files: checked cheaply before training, decoded whole in memory (Pillow), or decoded
and augmented inside tf.data as training streams them.

The check reads each file's header and its last bytes, not its pixels, so it costs a few reads
per file however large the images are. It finds files that are not JPEG or PNG, and files cut
short (a JPEG must end with its EOI marker, a PNG with its IEND chunk): the usual damage of an
interrupted copy. A file damaged in its middle is found only when decoded.
"""

import io
import os
from typing import Optional, Tuple

import numpy as np

from resnet.errors import UsageError

EXTENSIONS = (".png", ".jpg", ".jpeg")
_JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_TAIL = 1024  # bytes at the end searched for the end marker (some writers pad after it)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def check_bytes(head: bytes, tail: bytes) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """((width, height) or None, problem or None) from a file's first and last bytes."""
    if head.startswith(_PNG_START):
        if _PNG_END not in tail:
            return None, "truncated PNG (no IEND chunk at its end)"
        return (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")), None
    if head.startswith(_JPEG_START):
        if _JPEG_END not in tail:
            return None, "truncated JPEG (no end-of-image marker at its end)"
        return _jpeg_size(head), None
    return None, "not a JPEG or PNG image"


def _jpeg_size(head: bytes) -> Optional[Tuple[int, int]]:
    """The size in the first SOFn segment within `head`, or None if it lies further in."""
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(head[i + 7:i + 9], "big"), int.from_bytes(head[i + 5:i + 7], "big")
        i += 2 + length
    return None


def check_file(path: str, head_bytes: int = 64 * 1024):
    """check_bytes for a file on disk, reading only its start and its end."""
    try:
        with open(path, "rb") as f:
            head = f.read(head_bytes)
            size = os.fstat(f.fileno()).st_size
            if size > head_bytes:
                f.seek(max(size - _TAIL, 0))
                tail = f.read()
            else:
                tail = head[-_TAIL:]
    except OSError as e:
        return None, f"cannot read ({e.strerror})"
    return check_bytes(head, tail)


def check_data(data: bytes):
    return check_bytes(data[:64 * 1024], data[-_TAIL:])


def decode(data: bytes, where: str, size: Optional[int] = None) -> np.ndarray:
    """PNG/JPEG bytes to (H, W, 3) uint8 RGB (grayscale and RGBA converted). With `size`, an
    image of another size is refused."""
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib
    try:
        with Image.open(io.BytesIO(data)) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UsageError(f"{where}: cannot decode the image ({e}); replace or remove it (or "
                         "pass --skip_bad_images)") from e
    if size is not None and array.shape != (size, size, 3):
        raise UsageError(f"{where}: image is {array.shape[1]}x{array.shape[0]}, expected "
                         f"{size}x{size}; resize or remove it")
    return array


# --- Inside tf.data ---------------------------------------------------------------------------
# Large images: Inception-style random resized crop for training (a milder area range than
# ImageNet's 8-100%: a fine-tune of a few epochs, where the usual 8% crops of a small object
# mostly lose it), resize-and-centre-crop for evaluation and predict. Stateless ops seeded per
# example, as the CIFAR path: a resumed epoch sees the same crops.
CROP_AREA = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CENTRE_FRACTION = 0.875  # evaluation: the centre 87.5% (resize the short side to size / 0.875)


def tf_decode(data):
    """Encoded bytes to (H, W, 3) uint8 inside tf.data. JPEGs with libjpeg's accurate integer
    IDCT, as Pillow decodes them (decode()): TensorFlow's default fast IDCT was measured a
    level off on average on CIFAR's images re-encoded at 96 px, the accurate one equal to
    Pillow's to the last pixel, so a set streamed and the same set held in memory give the model
    the same pixels."""
    import tensorflow as tf
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def train_crop(image, size: int, seed):
    """A random crop of CROP_AREA of the image at an aspect in CROP_RATIO, resized to size,
    flipped at random: float32 0..255."""
    import tensorflow as tf
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=CROP_RATIO, area_range=CROP_AREA, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, extent)
    crop = tf.image.resize(crop, (size, size))
    return tf.image.stateless_random_flip_left_right(crop, seed=seed + 1)


def test_image(image, size: int, small: int):
    """A decoded test image as the pipeline hands it to a model that takes `size` x `size`
    (float32 0..255): images of at most `small` pixels a side are resized whole (a streamed
    tree of small images), larger ones centre-cropped (centre_crop)."""
    import tensorflow as tf
    is_small = tf.reduce_max(tf.shape(image)[:2]) <= small
    return tf.cond(is_small, lambda: tf.image.resize(tf.cast(image, tf.float32), (size, size)),
                   lambda: centre_crop(image, size))


def serving_image(image, size: int, model_resizes: bool, small: int):
    """Any decoded image as a trained model of input `size` takes it, the one rule for the
    exported SavedModel and batch inference. A model that resizes its input itself (trained on
    small images held in memory: CIFAR) gets the whole image resized to its input (a CIFAR test
    image goes in unchanged); any other gets the test pipeline's preparation (test_image)."""
    import tensorflow as tf
    if model_resizes:
        image = tf.cast(image, tf.float32)
        shape = tf.shape(image)
        # An image already at the input size (every CIFAR image) skips the resize: an
        # antialiased resize to its own size returns it unchanged, to the bit, and was half of
        # batch inference's input cost per image.
        return tf.cond(tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size)),
                       lambda: tf.ensure_shape(image, [size, size, 3]),
                       lambda: tf.image.resize(image, (size, size), antialias=True))
    return test_image(image, size, small)


def centre_crop(image, size: int):
    """Resize the short side to size / CENTRE_FRACTION, keep the centre size x size."""
    import tensorflow as tf
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / CENTRE_FRACTION / tf.reduce_min(shape)
    resized = tf.image.resize(image, tf.cast(tf.math.round(shape * scale), tf.int32))
    return tf.image.resize_with_crop_or_pad(resized, size, size)
