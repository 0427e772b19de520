"""The GPU configs and warm-up samples are generated from each config.pbtxt; the committed ones are current."""

import shutil

import pytest
from conftest import REPO
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from merc.models import triton_configs
from merc.training.artifacts import stamp_triton_version

MODELS = REPO / "model_repository"


def test_the_committed_derived_files_are_what_the_configs_generate():
    # Like a stale generated-code check: edit config.pbtxt, then run `make model-configs`.
    assert triton_configs.stale(MODELS) == []


def test_every_model_has_a_gpu_config():
    assert [m.name for m in triton_configs.models(MODELS)] == sorted(
        p.parent.parent.name for p in MODELS.glob(f"*/{triton_configs.GPU_CONFIG}"))


@pytest.mark.parametrize("model", triton_configs.models(MODELS), ids=lambda p: p.name)
def test_a_gpu_config_differs_only_in_the_instance_kind(model):
    cpu, gpu = (text_format.Parse(p.read_text(), model_config_pb2.ModelConfig())
                for p in (model / "config.pbtxt", model / triton_configs.GPU_CONFIG))
    assert [g.kind for g in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    cpu.instance_group[0].kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert gpu == cpu


def test_a_config_without_exactly_one_cpu_instance_group_is_refused():
    with pytest.raises(ValueError, match="found 0"):
        triton_configs.gpu_config('instance_group [ { kind: KIND_GPU, count: 1 } ]\n')
    with pytest.raises(ValueError, match="found 2"):
        triton_configs.gpu_config('instance_group [ { kind: KIND_CPU, count: 1 } ]\n' * 2)


def test_strings_are_length_prefixed():
    assert triton_configs.strings("hé", "") == b"\x03\x00\x00\x00h\xc3\xa9\x00\x00\x00\x00"


def test_check_fails_on_a_stale_copy_and_passes_once_rewritten(tmp_path, capsys):
    repo = tmp_path / "model_repository"
    shutil.copytree(MODELS / "audio_encoder", repo / "audio_encoder", ignore=shutil.ignore_patterns("*.safetensors"))
    config = repo / "audio_encoder" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 16000 ]", "dims: [ 8000 ]"))
    assert triton_configs.main(["--check", str(repo)]) == 1
    assert "stale" in capsys.readouterr().err
    assert triton_configs.main([str(repo)]) == 0
    assert triton_configs.main(["--check", str(repo)]) == 0
    # The warm-up's clip length follows the WAVE it describes.
    assert (repo / "audio_encoder" / "warmup" / "length").read_bytes() == (8000).to_bytes(8, "little")


def test_training_restamps_the_gpu_config_with_the_new_version(tmp_path):
    model = tmp_path / "fusion"
    shutil.copytree(MODELS / "fusion", model, ignore=shutil.ignore_patterns("*.safetensors"))
    stamp_triton_version(model / "config.pbtxt", "fusion-0123456789ab")
    assert 'string_value: "fusion-0123456789ab"' in (model / triton_configs.GPU_CONFIG).read_text()
    assert triton_configs.stale(tmp_path) == []
