"""Image sources and the caption plan: exact pixels in, DF-GAN's order of test captions."""
import numpy as np
import pytest
import torch
from PIL import Image

from fastt2i.eval.command import caption_plan
from fastt2i.eval.images import folder_batches, from_generator, list_images, load_image
from fastt2i.text import Vocabulary


def test_load_image_exact_pixels(tmp_path):
    pix = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4
    Image.fromarray(pix).save(tmp_path / "a.png")
    Image.fromarray(pix[..., 0]).save(tmp_path / "grey.png")  # grey is converted to RGB
    x = load_image(str(tmp_path / "a.png"))
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(pix).permute(2, 0, 1).float() / 255)
    g = load_image(str(tmp_path / "grey.png"))
    torch.testing.assert_close(g, torch.from_numpy(pix[..., 0]).float().div(255).expand(3, 4, 5))
    files = list_images(str(tmp_path))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.png", "grey.png"]
    (batch,) = list(folder_batches(files, 8))
    assert batch.shape == (2, 3, 4, 5)


def test_from_generator_maps_and_clamps():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).view(1, 5, 1, 1)
    torch.testing.assert_close(from_generator(x).flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_list_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_images(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        list_images(str(tmp_path))


class OfficialLike:
    """The attributes of TextImageDataset that the caption plan reads (3 images x 2 captions)."""

    def __init__(self):
        self.vocab = Vocabulary(["<end>", "a", "red", "blue", "bird", "small"])
        self.embeddings_num = 2
        self.captions = [[1, 2, 4], [1, 5, 4], [1, 3, 4], [3, 4], [5, 4], [1, 5, 2, 4]]
        self.class_id = [7, 7, 9]

    def __len__(self):
        return 3


def test_caption_plan_official_order():
    caps, rows, pool, classes = caption_plan(OfficialLike(), "birds", None, 3)
    # pass r uses caption r mod 2 of each image, images in order
    assert rows == [0, 2, 4, 1, 3, 5, 0, 2, 4]
    assert caps[:3] == ["a red bird", "a blue bird", "small bird"] and caps[3] == "a small bird"
    assert classes == [7, 7, 7, 7, 9, 9] and len(pool) == 6
    caps, rows, _, _ = caption_plan(OfficialLike(), "birds", 4, None)
    assert rows == [0, 2, 4, 1]
    with pytest.raises(ValueError, match="--n"):
        caption_plan(OfficialLike(), "birds", 1, None)
