import pytest
import torch
from torch import nn

from merc.models.lora import LoRAConfig, adapter_state, add_lora, load_merged


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(8, 8)
        self.other = nn.Linear(8, 8)

    def forward(self, x):
        return self.other(torch.relu(self.query(x)))


CFG = LoRAConfig(rank=2, alpha=4.0, dropout=0.0, targets=("query",))


def test_starts_as_the_base_model_and_trains_only_adapters():
    torch.manual_seed(0)
    base = Tiny()
    x = torch.randn(3, 8)
    want = base(x)
    names = add_lora(base, CFG)
    assert names == ["query"]
    assert torch.allclose(base(x), want)
    assert {n for n, p in base.named_parameters() if p.requires_grad} == {"query.lora_a", "query.lora_b"}


def test_merged_weights_reproduce_the_adapted_model():
    torch.manual_seed(0)
    fresh = Tiny()
    trained = Tiny()
    trained.load_state_dict(fresh.state_dict())
    add_lora(trained, CFG)
    with torch.no_grad():
        trained.query.lora_b.normal_()
    x = torch.randn(4, 8)
    state = adapter_state(trained)
    assert set(state) == {"query.lora_a", "query.lora_b"}
    merged = load_merged(fresh, CFG, state)
    assert isinstance(merged.query, nn.Linear)
    assert torch.allclose(merged(x), trained(x), atol=1e-6)


def test_an_adapter_for_another_model_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        load_merged(Tiny(), CFG, {"key.lora_a": torch.zeros(2, 8)})


def test_a_soup_is_the_mean_of_the_merged_adapters():
    from merc.models.lora import soup

    torch.manual_seed(0)
    base = Tiny()
    merged, states = [], []
    for _seed in range(3):
        m = Tiny()
        m.load_state_dict(base.state_dict())
        add_lora(m, CFG)
        with torch.no_grad():
            m.query.lora_a.normal_()
            m.query.lora_b.normal_()
        states.append(adapter_state(m))
        fresh = Tiny()
        fresh.load_state_dict(base.state_dict())
        merged.append(load_merged(fresh, CFG, states[-1]).query.weight)
    state, cfg = soup(states, CFG)
    assert cfg.rank == 3 * CFG.rank
    fresh = Tiny()
    fresh.load_state_dict(base.state_dict())
    assert torch.allclose(load_merged(fresh, cfg, state).query.weight, torch.stack(merged).mean(0), atol=1e-5)
