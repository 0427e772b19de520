"""The shape ARCHITECTURE.md describes: deployables import the library, never the reverse; the core imports no client library."""

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "services" / "merc"
DEPLOYABLES = ("merc.encoder", "merc.fusion", "merc.gateway")
# The pipeline sees a Bus, a store and an InferenceClient; the clients behind them stay behind them.
CLIENT_LIBRARIES = ("kafka", "sqlalchemy", "psycopg", "alembic", "tritonclient", "grpc", "torch", "transformers")


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "v1" not in p.relative_to(LIBRARY).parts)


@pytest.mark.parametrize("path", modules(LIBRARY), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_the_library_never_imports_a_deployable(path):
    bad = sorted(n for n in imports(path) if n.startswith(DEPLOYABLES) and n.split(".")[1] in {"encoder", "fusion", "gateway"})
    assert not bad, f"{path.relative_to(LIBRARY)} imports {bad}: deployables import the library, never the reverse"


@pytest.mark.parametrize("path", modules(LIBRARY / "pipeline"), ids=lambda p: p.name)
def test_the_pipeline_core_imports_no_client_library(path):
    bad = sorted(n for n in imports(path) if n.split(".")[0] in CLIENT_LIBRARIES)
    assert not bad, f"pipeline/{path.name} imports {bad}: go through merc.bus, merc.store or merc.inference"


def test_the_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from merc.gateway.server import GatewayServicer\nimport kafka\n")
    assert {"merc.gateway.server", "kafka"} <= imports(bad)
