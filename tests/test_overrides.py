"""Dotted overrides: applying, flattening, and walking any pydantic schema by a dotted path.

The schema walk is generic (it takes the root model class), so these cases use
a small schema of their own with every annotation shape it must follow:
nested models, Optional, a list of models, a string-discriminated union and a
callable discriminator with tags.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from flexcnn.errors import ConfigError
from flexcnn.overrides import apply_override, apply_overrides, dotted_items, flatten, walk_schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Small(_Strict):
    kind: Literal["small"] = "small"
    width: int = 8


class Large(_Strict):
    kind: Literal["large", "huge"]
    depth: int = 50


class Leaf(_Strict):
    size: int = 1


def _shape(value: Any) -> str:
    return "round" if (value.get("radius") if isinstance(value, dict) else getattr(value, "radius", None)) else "square"


class Round(_Strict):
    radius: float = 1.0


class Square(_Strict):
    side: float = 1.0


class Root(_Strict):
    net: Small | Large = Field(default_factory=Small, discriminator="kind")
    shape: Annotated[Annotated[Round, Tag("round")] | Annotated[Square, Tag("square")], Discriminator(_shape)] = Field(
        default_factory=Square
    )
    extra: Leaf | None = None
    leaves: list[Leaf] = Field(default_factory=list)
    rate: float = 0.1


def _error_loc(tree: dict[str, Any]) -> tuple[Any, ...]:
    with pytest.raises(ValidationError) as info:
        Root.model_validate(tree)
    return info.value.errors()[0]["loc"]


@pytest.mark.parametrize(
    ("tree", "section"),
    [
        ({"net": {"kind": "huge", "dept": 3}}, Large),  # a string discriminator: the tag is the kind's value
        ({"net": {"kind": "small", "widht": 3}}, Small),
        ({"shape": {"radius": 2.0, "radios": 1}}, Round),  # a callable discriminator with Tag markers
        ({"extra": {"sise": 2}}, Leaf),  # Optional[Leaf]
    ],
)
def test_an_error_location_leads_to_the_section_of_the_unknown_field(tree: dict[str, Any], section: type) -> None:
    loc = _error_loc(tree)
    path = walk_schema(Root, loc[:-1], union_tags=True)
    assert path.complete and path.models == (section,)
    assert walk_schema(Root, loc, union_tags=True).suggestion() in section.model_fields


def test_a_dotted_path_walks_every_member_of_a_union() -> None:
    both = walk_schema(Root, "net")
    assert both.complete and set(both.models) == {Small, Large} and not both.holds_value
    assert walk_schema(Root, "net.depth").complete and walk_schema(Root, "net.width").holds_value
    typo = walk_schema(Root, "net.dpth")
    assert not typo.complete and typo.walked == "net" and typo.suggestion() == "depth"
    assert "width" in typo.known() and "depth" in typo.known()
    # Union tags are error-location syntax, not config paths.
    assert not walk_schema(Root, "net.large.depth").complete


def test_a_path_through_a_value_stops_with_no_section() -> None:
    path = walk_schema(Root, "rate.x")
    assert not path.complete and path.walked == "rate" and path.models == ()
    assert walk_schema(Root, "extra.size").complete and walk_schema(Root, "leaves.size").complete


def test_flatten_keeps_lists_and_empty_mappings_as_values() -> None:
    tree = {"model": {"num_filters": [8, 16], "head": {}}, "optim.lr": 0.1}
    assert list(dotted_items(tree)) == [("model.num_filters", [8, 16]), ("model.head", {}), ("optim.lr", 0.1)]
    assert flatten({"a": {"b": 1}}, prefix="x.") == {"x.a.b": 1}


def test_apply_overrides_merges_mappings_and_leaves_the_tree_alone() -> None:
    tree = {"model": {"kind": "flexible_cnn", "dense_units": [32]}, "optim": 3}
    out = apply_overrides(tree, {"model": {"activation": "gelu"}, "optim.lr": 0.01})
    assert out == {"model": {"kind": "flexible_cnn", "dense_units": [32], "activation": "gelu"}, "optim": {"lr": 0.01}}
    assert tree["optim"] == 3 and "activation" not in tree["model"]


def test_apply_override_parses_the_value_and_refuses_a_value_as_section() -> None:
    tree: dict[str, Any] = {"optim": {"lr": 0.1}, "train": 1}
    apply_override(tree, "optim.lr=3e-4")
    apply_override(tree, "model.num_filters=[8, 16]")
    assert tree["optim"]["lr"] == pytest.approx(3e-4) and tree["model"]["num_filters"] == [8, 16]
    with pytest.raises(ConfigError, match="train is a value, not a section"):
        apply_override(tree, "train.epochs=2")
    with pytest.raises(ConfigError, match=r"must look like section\.field=value"):
        apply_override(tree, "optim.lr")
