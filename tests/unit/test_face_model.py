import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from merc.data import fer2013
from merc.models.face_cnn import FaceCNN, FaceConfig
from merc.pipeline.labels import LABELS
from merc.training.vision import augment, erase


def jpeg(value: int, size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_loads_a_tar_with_a_folder_per_label(tmp_path):
    (tmp_path / "fer2013").mkdir()
    with tarfile.open(tmp_path / "fer2013" / "publictest.tar", "w") as tar:
        for i, (label, size) in enumerate((("happy", 48), ("angry", 48), ("sad", 64), ("bored", 48))):
            data = jpeg(40 * i, size)
            info = tarfile.TarInfo(f"publictest/{label}/{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    x, y = fer2013.load_split("publictest", root=tmp_path)
    assert x.shape == (3, 48, 48) and x.dtype == np.uint8  # the 64x64 face is resized, 'bored' skipped
    assert [LABELS[i] for i in y] == ["joy", "anger", "sadness"]


def test_loads_a_plain_folder_too(tmp_path):
    d = tmp_path / "fer2013" / "train" / "surprise"
    d.mkdir(parents=True)
    (d / "a.jpg").write_bytes(jpeg(100))
    x, y = fer2013.load_split("train", root=tmp_path)
    assert len(x) == 1 and LABELS[y[0]] == "surprise"


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(fer2013.DataUnavailable):
        fer2013.load_split("train", root=tmp_path)


def test_cnn_shapes_and_augmentation_keeps_shape():
    x = FaceCNN.normalise(torch.randint(0, 256, (5, 48, 48), dtype=torch.uint8))
    assert x.shape == (5, 1, 48, 48)
    out = FaceCNN(FaceConfig()).eval()(x)
    assert out["embedding"].shape == (5, FaceConfig().embedding) and out["logits"].shape == (5, len(LABELS))
    assert augment(x, torch.Generator().manual_seed(0)).shape == x.shape


def test_the_mirror_average_makes_a_face_and_its_mirror_image_score_alike():
    torch.manual_seed(0)
    x = FaceCNN.normalise(torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8))
    plain = FaceCNN(FaceConfig(channels=(8, 8, 8, 8), convs=3)).eval()
    mirrored = FaceCNN(FaceConfig(channels=(8, 8, 8, 8), convs=3, flip_average=True)).eval()
    mirrored.load_state_dict(plain.state_dict())  # three convs per stage: same weights, same layout
    with torch.no_grad():
        a, b = mirrored(x), mirrored(x.flip(-1))
        alone = plain(x)["logits"]
    torch.testing.assert_close(a["logits"], b["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["embedding"], b["embedding"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone, plain(x.flip(-1))["logits"])  # without it, the two differ
    mirrored.train()
    assert mirrored(x)["logits"].shape == (3, len(LABELS))  # training sees each face once


def test_erasing_blanks_one_rectangle_in_some_faces_only():
    x = torch.ones(64, 1, 48, 48)
    out = erase(x, torch.Generator().manual_seed(1))
    blanked = (out == 0).flatten(1).sum(1)
    assert 0 < int((blanked > 0).sum()) < 64  # about half
    area = blanked[blanked > 0].float() / (48 * 48)
    assert float(area.min()) > 0.005 and float(area.max()) <= 0.25


def test_seeds_trained_at_once_give_the_same_models_as_one_after_another(tmp_path):
    from merc.training import vision

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("publictest", 32)):
        np.savez(tmp_path / f"fer2013-{split}.npz", x=rng.integers(0, 256, (n, 48, 48), dtype=np.uint8),
                 y=rng.integers(0, len(LABELS), n))
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        args = ["--seeds", "2", "--jobs", str(jobs), "--epochs", "1", "--channels", "4,4,4,4", "--threads", "1",
                "--cache", str(tmp_path), "--out", str(out / "1"), "--report", str(out / "report.md")]
        assert vision.main(args) == 0
        runs[jobs] = (out / "1" / "config.json").read_text(), (out / "report.md").read_text()
    version = [next(line for line in text.splitlines() if '"version"' in line) for text, _ in runs.values()]
    assert version[0] == version[1]  # seed 0's weights, bit for bit
    assert "| 1 |" in runs[2][1] and "Averaged with its mirror image" in runs[2][1]
