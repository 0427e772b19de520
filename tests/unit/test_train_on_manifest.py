"""`merc train fusion --manifest`: a user's own labelled, paired data trains and ships a servable model."""

import json
import shutil

import numpy as np
from conftest import REPO
from samples import face_png, voice_wav

from merc.models.predictor import FusionPredictor
from merc.training import fusion

TEXTS = {"joy": ["That's wonderful news!", "I love it!"], "anger": ["Get out of my room!", "This is outrageous."],
         "neutral": ["It's on the table.", "Okay, see you at six."]}


def manifest(path, conversations, seed):
    rng = np.random.default_rng(seed)
    lines = []
    for c in range(conversations):
        for u in range(4):
            label = list(TEXTS)[rng.integers(3)]
            line = {"conversation": f"c{c}", "utterance": u, "speaker": "AB"[u % 2], "label": label,
                    "text": TEXTS[label][rng.integers(2)]}
            if u == 1:
                line["audio"] = "voice.wav"
            if u == 2:
                line["faces"] = ["face.png"]
            lines.append(line)
    lines.append({"conversation": "c0", "utterance": 9, "text": "no label here"})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_training_on_a_labelled_manifest_ships_a_calibrated_model(tmp_path, capsys):
    (tmp_path / "voice.wav").write_bytes(voice_wav())
    (tmp_path / "face.png").write_bytes(face_png())
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "model_repository", repo, ignore=shutil.ignore_patterns("__pycache__"))
    before = (repo / "fusion/1/weights.safetensors").read_bytes()
    code = fusion.main(["--manifest", str(manifest(tmp_path / "train.jsonl", 6, 0)),
                        "--dev-manifest", str(manifest(tmp_path / "dev.jsonl", 3, 1)),
                        "--seeds", "1", "--epochs", "2", "--repository", str(repo), "--results", str(tmp_path / "out"),
                        "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "lines skipped" in out and "is not one of" in out  # the unlabelled line is reported, not trained on
    assert (repo / "fusion/1/weights.safetensors").read_bytes() != before
    calibration = json.loads((repo / "fusion/1/calibration.json").read_text())
    assert calibration["coverage"] == 0.9 and calibration["default"]["temperature"] > 0
    predictor = FusionPredictor(repo / "fusion/1")  # loads: what Triton and the embedded mode would serve
    assert predictor.version.startswith("fusion-")
    assert (tmp_path / "out/fusion_manifest.md").is_file()
