"""Pins what the synthetic-data writers produce for a fixed seed.

The other dataset tests check that the same seed gives the same bytes
within one run; these digests also catch a change of the generated content
between versions of the code. Images are hashed as the pixels handed to
the encoder (JPEG and PNG bytes also depend on Pillow's codec versions),
every other file as its bytes.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slak_mm.datasets import generate_datasets

# Small, non-square, five classes, and every layout's own options.
ARGS = dict(num_train=5, num_val=5, num_classes=5, seed=3)
LAYOUT_ARGS = {
    'ade20k': dict(image_size=(64, 48), max_objects=3),
    'coco': dict(image_size=(40, 56), max_objects=2),
    'imagenet': dict(image_size=48),
    'ade20k-context': dict(image_size=(48, 64)),
}
DIGESTS = {
    'ade20k': (
        '98c1e6eead96041b4ac8f158a66e9c26d4ff27653abd59612a78b6eef2fd48f7'
    ),
    'ade20k-context': (
        '87d015707e264009709fb67a30b58da501eebd990cc98abbdbcd69e87804bf0a'
    ),
    'coco': (
        '2a0bc1143421d62ff1a559f7ff6dbfe58af8301191491e9517f3b5774dbbafe8'
    ),
    'imagenet': (
        '3380799f65c56c5b9e019a38d774dbf91fc72732a1a15f792508dbd70c712fbf'
    ),
}


def layout_digest(layout, root, monkeypatch):
    """sha256 over (relative path, content) of every file written."""
    pixels = {}
    save = Image.Image.save

    def recording_save(image, path, *args, **kwargs):
        array = np.asarray(image)
        pixels[Path(path).resolve()] = (
            f'{image.mode} {array.shape} '.encode() + array.tobytes()
        )
        return save(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, 'save', recording_save)
    generate_datasets(layout, root, **ARGS, **LAYOUT_ARGS[layout])
    monkeypatch.undo()
    digest = hashlib.sha256()
    files = sorted(p for p in Path(root).rglob('*') if p.is_file())
    # Every image went through Image.save; the rest is json and txt.
    images = [p for p in files if p.suffix not in ('.json', '.txt')]
    assert sorted(pixels) == sorted(p.resolve() for p in images)
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        content = pixels.get(path.resolve())
        digest.update(path.read_bytes() if content is None else content)
    return digest.hexdigest()


@pytest.mark.parametrize('layout', sorted(DIGESTS))
def test_generated_data_is_pinned(layout, tmp_path, monkeypatch):
    assert layout_digest(layout, tmp_path, monkeypatch) == DIGESTS[layout]
